"""The command line: flags reach the config as the typed values they are, and every command that
builds an engine takes the same engine flags.

Flag values are never read as YAML (only ``--set`` is), so a path with ``#`` or a file named
``on`` arrives intact; the end-to-end cases run the real CLI in a subprocess.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

import pytest

from conftest import cli
from streamrec.cli import COMMANDS, build_parser
from streamrec.commands.flags import ENGINE_FLAGS, ConfigValue, config_from_flags
from streamrec.config import REPO_ROOT, load_config
from streamrec.errors import StreamrecError

ENGINE_COMMANDS = [("run",), ("eval",), ("cluster",), ("bench", "engine"), ("bench", "pipeline"), ("bench", "compare")]
CONFIG_FLAGS = ("--config", "--checkpoint", "--set")
BENCH_LISTS = ("--backend", "--precision", "--parallel-calls")  # bench engine times a list of each


def run_in(folder, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """The real CLI with ``folder`` as the working directory, where relative paths land."""
    return subprocess.run(cli(*args), cwd=folder, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"})


def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices[name]


def command_parser(*path: str) -> argparse.ArgumentParser:
    """The parser of ``run_stream.py COMMAND [BENCHMARK]``, configured as the CLI configures it."""
    parser = build_parser(path[0])
    for name in path:
        parser = subparser(parser, name)
    return parser


def leaf_parsers() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every command and sub-command that takes options, by its path."""
    found = {}

    def walk(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            found[path] = parser
        for sub in subs:
            for name, child in sub.choices.items():
                walk((*path, name), child)

    for name in COMMANDS:
        walk((name,), subparser(build_parser(name), name))
    return found


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


def parsed(*argv: str) -> argparse.Namespace:
    return build_parser(argv[0]).parse_args(list(argv))


# --------------------------------------------------------------------------- values arrive as given


def test_event_log_and_checkpoint_paths_with_a_hash_reach_the_run_intact(tmp_path, video_file):
    """``#`` starts a YAML comment: through YAML, ``logs/cam #2.jsonl`` was ``logs/cam``."""
    weights = tmp_path / "weights #1.pt"
    shutil.copy(REPO_ROOT / "streamrec/weights/slowfast_tiny/model.pt", weights)
    result = run_in(tmp_path, "run", "--config", "slowfast_tiny", "--checkpoint", str(weights),
                    "--source", str(video_file), "--quiet", "--publish", "none", "--event-log", "logs/cam #2.jsonl")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["cam #2.jsonl"]
    assert (tmp_path / "logs" / "cam #2.jsonl").read_text().count("\n") > 0


def test_an_event_log_named_on_is_a_file_named_on(tmp_path, video_file):
    """YAML reads a bare ``on`` as true; a flag's value is a file name."""
    result = run_in(tmp_path, "run", "--source", str(video_file), "--quiet", "--publish", "none", "--event-log", "on")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "on").is_file() and (tmp_path / "on").stat().st_size > 0


def test_flags_set_typed_values_and_set_has_the_last_word():
    config = config_from_flags(parsed("run", "--config", "slowfast_tiny", "--checkpoint", "w #1.pt", "--event-log",
                                      "on", "--publish", "none", "--quiet", "--hop", "4", "--source", "a=x.mp4",
                                      "--source", "y.mp4", "--threads", "2"))
    assert config.checkpoint == "w #1.pt" and config.events.event_log == "on"
    assert config.events.publish is None and config.events.stdout is False
    assert config.pipeline.hop_frames == 4 and config.engine.threads == 2
    assert [(s.id, s.source) for s in config.streams] == [("a", "x.mp4"), ("cam1", "y.mp4")]
    later = config_from_flags(parsed("run", "--hop", "4", "--set", "pipeline.hop_frames=6"))
    assert later.pipeline.hop_frames == 6
    unset = config_from_flags(parsed("run"))  # no flag given: the config's own values
    assert unset == load_config("slowfast_tiny")


def test_a_bad_flag_value_is_the_configs_one_line_error():
    with pytest.raises(StreamrecError, match="engine.parallel_calls >= 1"):
        config_from_flags(parsed("eval", "--parallel-calls", "0"))
    result = run_in(REPO_ROOT, "run", "--threads", "-1", timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "engine.threads must be >= 0" in result.stderr


def test_eval_takes_the_engine_file_and_parallel_calls():
    config = config_from_flags(parsed("eval", "--engine", "model.onnx", "--parallel-calls", "2", "--backend",
                                      "onnxruntime"))
    assert config.engine.engine_file == "model.onnx" and config.engine.parallel_calls == 2
    assert config.engine.backend == "onnxruntime"


def test_bench_pipeline_and_compare_default_to_auto_and_take_the_flag_over_it():
    for benchmark in ("pipeline", "compare"):
        assert config_from_flags(parsed("bench", benchmark)).engine.backend == "auto"
        assert config_from_flags(parsed("bench", benchmark, "--backend", "torch")).engine.backend == "torch"
    assert config_from_flags(parsed("bench", "pipeline", "--max-batch", "2")).pipeline.max_batch == 2


def test_run_on_onnxruntime_never_imports_torch(tmp_path):
    """The flags, the backend registry and the run command import no engine library of their own."""
    from streamrec.export import export_config

    onnx_file = export_config(load_config("slowfast_tiny"), tmp_path / "tiny.onnx")
    script = (f"import sys; from streamrec.cli import main; rc = main(['run', '--backend', 'onnxruntime', '--engine', "
              f"{str(onnx_file)!r}, '--device', 'cpu', '--source', 'synthetic:frames=40', '--quiet', '--publish', "
              f"'none']); print(rc, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["0", "False"]


# --------------------------------------------------------------------------- the same flags everywhere


def test_every_engine_building_command_takes_the_same_engine_flags():
    reference = options(command_parser("run"))
    for path in ENGINE_COMMANDS:
        taken = options(command_parser(*path))
        missing = [o for o in (*CONFIG_FLAGS, *ENGINE_FLAGS) if o not in taken]
        assert not missing, f"{' '.join(path)} lacks {missing}"
        for option in ENGINE_FLAGS:
            if path == ("bench", "engine") and option in BENCH_LISTS:
                continue  # its own comma-separated lists
            action, same = taken[option], reference[option]
            assert isinstance(action, ConfigValue), f"{' '.join(path)} {option} does not set the config"
            assert (action.path, action.type, action.choices) == (same.path, same.type, same.choices), option


def test_a_command_that_runs_an_engine_takes_all_engine_flags_or_none():
    """``--engine`` or ``--parallel-calls`` only make sense for a command that runs an engine; such a
    command must take every engine flag, so the flags cannot drift apart again."""
    engine_only = {"--engine", "--parallel-calls"}
    runs_engine = {path for path, parser in leaf_parsers().items() if engine_only & set(options(parser))}
    assert runs_engine == set(ENGINE_COMMANDS)


def test_backend_choices_come_from_the_registry(monkeypatch):
    import streamrec.backends as backends

    monkeypatch.setattr(backends, "_BACKENDS", backends.registered_backends())  # restored after the test
    backends.register_backend("stub", precisions=("fp32",), available=lambda engine: False)(lambda config: None)
    for path in ENGINE_COMMANDS:
        if path != ("bench", "engine"):
            assert "stub" in options(command_parser(*path))["--backend"].choices, path
    assert config_from_flags(parsed("run", "--backend", "stub")).engine.backend == "stub"


# --------------------------------------------------------------------------- a bad flag value names the flag


@pytest.mark.parametrize("argv, line", [
    (("run", "--hop", "0"), "--hop: pipeline.hop_frames must be from 1 to 100000, got 0"),
    (("run", "--hop-seconds", "0"), "--hop-seconds: pipeline.hop_seconds must be from 0.001 to 3600, got 0"),
    (("run", "--parallel-calls", "65"), "--parallel-calls: engine.parallel_calls must be from 1 to 64, got 65"),
    (("run", "--source", "lobby.door=0"), "--source: stream id 'lobby.door' may hold only letters"),
    (("run", "--hop", "0", "--set", "pipeline.hop_frames=4", "--set", "pipeline.max_wait_ms=-1"),
     "--set: pipeline.max_wait_ms must be from 0 to 10000, got -1"),
    (("eval", "--threads", "2000"), "--threads: engine.threads must be from 0 to 1024, got 2000"),
    (("bench", "pipeline", "--max-batch", "20000"), "--max-batch: pipeline.max_batch must be from 1 to 15534"),
])
def test_a_bad_value_from_a_flag_is_reported_against_the_flag(argv, line):
    with pytest.raises(StreamrecError) as err:
        config_from_flags(parsed(*argv))
    assert str(err.value).startswith(line)


def test_every_command_takes_verbose():
    for path, parser in leaf_parsers().items():
        assert "--verbose" in options(parser), path
    assert parsed("run", "--verbose").verbose and not parsed("run").verbose


def test_the_cli_logs_through_redact():
    """A URL in any log line, from any module, shows masked on stderr."""
    script = ("from streamrec.cli import log_to_stderr; import logging; log_to_stderr(); "
              "logging.getLogger('streamrec.anywhere').warning('cannot open %s', 'rtsp://u:PW1@h/x?token=TOK1')")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.stderr.strip().endswith("WARNING streamrec.anywhere: cannot open rtsp://u:***@h/x?token=***"), \
        result.stderr


@pytest.mark.parametrize("args, message", [
    (["run", "--config", "streamrec/weights/slowfast_tiny/model.pt"], "is not a text file; pass a YAML config"),
    (["eval", "--seed", "-1"], "--seed: must be >= 0, got -1"),
    (["train", "--lr", "nan"], "--lr: must be a number above 0, got nan"),
    (["train", "--val-fraction", "nan"], "--val-fraction: must be from 0 to 1, got nan"),
    (["run", "--device", "meta", "--backend", "torch", "--source", "synthetic:frames=5"],
     "engine.device=meta is not a device streamrec runs on"),
    (["train", "--stream-from", "slowfast_tiny", "--device", "mps", "--steps", "1"],
     "--device mps is not a device streamrec runs on"),
    (["train", "--stream-from", "slowfast_tiny_roi", "--steps", "1"], "the per-person mode has no streaming form"),
    (["broker", "--hwm", "99999999999999"], "--hwm: must be at most 2147483647"),
    (["subscribe", "--timeout", "nan"], "--timeout: must be a number above 0, got nan"),
    (["bench", "pipeline", "--fps", "0"], "--fps: must be a number above 0, got 0"),
    (["run", "--source", "synthetic:frames=5", "--publish", "none", "--sink", "redis://127.0.0.1:1/0?flush_s=nan"],
     "flush_s=nan must be 0 to 3600"),
    (["run", "--set", "clip.crop_size=16", "--set", "clip.short_side=16", "--source", "synthetic:frames=5"],
     "a 16 px crop is smaller than the network's spatial stride 32"),
    (["export", "--output", "/proc/streamrec-nowhere/out.onnx"], "cannot use /proc/streamrec-nowhere"),
    (["export", "--output", "out.onnx", "--checkpoint", "ftp://u:hunter2@127.0.0.1/w.pyth"], "ftp://u:***@127.0.0.1"),
])
def test_bad_files_numbers_and_paths_are_one_line_without_a_secret(args, message, tmp_path):
    """Found by trying the commands with what users get wrong: each was a traceback (or, the
    last, printed the password of a URL that went through a file path)."""
    result = subprocess.run(cli(*args), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip() and " INFO " not in line]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert message in lines[-1] and "hunter2" not in result.stderr, result.stderr
