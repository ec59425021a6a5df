"""Every bad input found in issue 16 ends in one line naming the problem and the fix, a non-zero
exit status and no traceback, before anything starts (the real CLI, in a subprocess).

Cases are the issue's, word for word where it gave them; ``{tmp}`` is the test's own folder.
"""

from __future__ import annotations

import pytest

from conftest import run_cli

RUN = ["run", "--publish", "none", "--quiet"]

BAD_INPUTS = [  # (argv, what the error line says)
    (["run", "--source", "rtsp://bob:pw@[::1"], "source rtsp://bob:***@[::1 is not a valid URL"),
    (["run", "--set", "pipeline.max_batch=1000000000"], "--set: pipeline.max_batch must be from 1 to 15534, got 1000000000"),
    (["run", "--set", "pipeline.max_batch=99999999999999999999"], "--set: pipeline.max_batch must be from 1 to 15534"),
    (["subscribe", "--connect", "garbage", "--timeout", "1"], "--connect 'garbage' is not a ZeroMQ address"),
    (["keys", "../../etc/x", "--dir", "{tmp}/d"], "key name '../../etc/x' must be a plain name"),
    (["run", "--source", "synthetic:fps=0"],
     "--source: stream 'cam0': synthetic source option 'fps=0': fps must be from 0.1 to 1000"),
    (["run", "--source", "synthetic:size=100000x100000"], "each side must be from 16 to 7680 pixels"),
    (["run", "--set", "pipeline.buffer_slack=1000000000"], "--set: a stream's ring buffer would hold 1000000040 frames"),
    (["run", "--set", "pipeline.stall_timeout_s=0"], "--set: pipeline.stall_timeout_s must be from 1 to 3600, got 0"),
    (["run", "--set", "events.event_log_max_mb=0"], "--set: events.event_log_max_mb must be from 0.001 to 1048576, got 0"),
    (["run", "--set", "events.event_log_max_mb=-1"], "--set: events.event_log_max_mb must be from 0.001 to 1048576"),
    (["run", "--curve-secret-key", "{tmp}/server.key_secret", "--curve-allowed-clients", "{tmp}/allowed",
      "--publish", "tcp://127.0.0.1:5999"],
     "--curve-allowed-clients: events.curve_allowed_clients '{tmp}/allowed' holds no public key"),
    (["run", "--hop", "0"], "--hop: pipeline.hop_frames must be from 1 to 100000, got 0"),
    (["run", "--source", "lobby.door=synthetic"], "--source: stream id 'lobby.door' may hold only letters"),
    (["run", "--publish", "garbage"], "--publish: events.publish 'garbage' is not a ZeroMQ address"),
    (["run", "--source", "bad={tmp}/zero.mp4"], "stream bad: video file '{tmp}/zero.mp4' is empty (0 bytes)"),
    (["run", "--set", "streams=[door=rtsp://cam:pw@10.0.0.7/live?token=t0k3n"],  # shown as typed, but masked
     "override 'streams=[door=rtsp://cam:***@10.0.0.7/live?token=***': the value is not valid YAML"),
    # A config file's YAML mistake: where, what and the fix in one line (PyYAML's message is 7 lines,
    # quoting the text around the mistake: here a camera's password)
    (["run", "--config", "{tmp}/unclosed.yaml"],
     "config {tmp}/unclosed.yaml is not valid YAML: expected ',' or ']', but got '<scalar>' at line 3, column 1, "
     "while parsing a flow sequence from line 2, column 10; fix the syntax there (close every bracket and quote"),
    (["run", "--config", "{tmp}/indented.yaml"],
     "config {tmp}/indented.yaml is not valid YAML: expected <block end>, but found '<block mapping start>' at line "
     "3, column 2, while parsing a block mapping from line 1, column 1; fix the syntax there"),
    (["bench", "engine", "--parallel-calls", "1,5000"],  # as many engine sessions: engine.parallel_calls' bound
     "--parallel-calls: engine.parallel_calls must be from 1 to 64, got 5000"),
    (["cluster", "--source", "synthetic", "--lease", "inf"],
     "--lease must be a finite number of seconds above 0, got inf"),
    (["cluster", "--source", "synthetic", "--rebalance", "nan"],
     "--rebalance must be a number of seconds above 0, got nan"),
    (["cluster", "--source", "synthetic", "--max-restarts", "-2"],
     "--max-restarts must be -1 (always restart) or a count from 0, got -2"),
    # A number a flag's type refuses, before anything starts (each of these ran, waited or grew without end)
    (["run", "--wait-subscriber", "nan"], "argument --wait-subscriber: " "must be a number >= 0, got nan"),
    (["run", "--wait-subscriber", "inf"], "argument --wait-subscriber: " "must be a number >= 0, got inf"),
    (["run", "--wait-subscriber", "-1"], "argument --wait-subscriber: " "must be a number >= 0, got -1"),
    (["bench", "engine", "--peak-gflops", "nan"], "argument --peak-gflops: " "must be a number above 0, got nan"),
    (["bench", "pipeline", "--duration", "nan"], "argument --duration: " "must be a number above 0, got nan"),
    (["bench", "pipeline", "--duration", "inf"], "argument --duration: " "must be a number above 0, got inf"),
    (["bench", "pipeline", "--duration", "0"], "argument --duration: " "must be a number above 0, got 0"),
    (["bench", "pipeline", "--engine-seconds", "inf"], "argument --engine-seconds: " "must be a number >= 0, got inf"),
    (["bench", "pipeline", "--p99-bound", "nan"], "argument --p99-bound: " "must be a number above 0, got nan"),
    (["eval", "--minutes", "nan"], "argument --minutes: " "must be a number above 0, got nan"),
    (["eval", "--minutes", "inf"], "argument --minutes: " "must be a number above 0, got inf"),
    (["eval", "--minutes", "1e9"], "argument --minutes: " "must be at most 1440 (a day of video), got 1e9"),
    (["eval", "--count", "0"], "argument --count: " "must be >= 1, got 0"),
    (["bench", "streaming", "--minutes", "nan"], "argument --minutes: must be a number above 0, got nan"),
    (["subscribe", "--count", "0"], "argument --count: " "must be >= 1, got 0"),
    # A bench plan refused before the engine-only reference runs, not by a trial's cameras minutes in
    # (a duration past time_t was a traceback; 1e300 fps and a 5x5 frame failed after the reference)
    (["bench", "pipeline", "--duration", "1e300"], "--duration must be above 0 and at most 86400 s (a day), got 1e+300"),
    (["bench", "pipeline", "--persons", "2", "--duration", "1e9"], "--duration must be above 0 and at most 86400 s"),
    (["bench", "pipeline", "--engine-seconds", "1e9"], "--engine-seconds must be from 0 (time just --engine-iters"),
    (["bench", "pipeline", "--fps", "1e300"], "--fps must be from 0.1 to 1000, got 1e+300"),
    (["bench", "pipeline", "--size", "5x5"], "--size must be WIDTHxHEIGHT, each side from 16 to 7680 pixels"),
    # A report file refused before the benchmark runs (the plot's format was a traceback after it)
    (["bench", "engine", "--plot", "{tmp}/plot.xyz"], "--plot {tmp}/plot.xyz: use a file name ending in .png"),
    (["bench", "engine", "--markdown", "{tmp}/binary.md"], "--markdown {tmp}/binary.md is not a text file"),
    # Numbers past what a run can take, refused by the flag, not by a crash minutes in (an overflow
    # in the optimizer or the seeding, a million threads, a sequence or batch no memory holds)
    (["train", "--lr", "1e300"], "argument --lr: must be above 0 and at most 10, got 1e300"),
    (["train", "--seed", "99999999999999999999999"], "argument --seed: must be from 0 to 4294967295"),
    (["train", "--threads", "1000000"], "argument --threads: must be from 1 to 1024, got 1000000"),
    (["train", "--workers", "100000"], "argument --workers: must be from 0 to 256, got 100000"),
    (["train", "--stream-from", "slowfast_tiny", "--units", "100000"], "argument --units: must be from 1 to 1024"),
    (["train", "--stream-from", "slowfast_tiny", "--batch-size", "100000"], "argument --batch-size: must be from 1 to 4096"),
    (["bench", "streaming", "--hops", "1000000000"], "--hops '1000000000': each must be at most 1024, got 1000000000"),
    # A checkpoint that is not a string was a TypeError traceback; a key path with an empty part
    # was blamed on the config file
    (["run", "--set", "checkpoint=[1, 2]"], "--set: 'checkpoint' must be a file path, zoo:NAME or URL, got [1, 2]"),
    (["run", "--config", "{tmp}/listed.yaml"], "{tmp}/listed.yaml: 'checkpoint' must be a file path, zoo:NAME or URL"),
    (["export", "--output", "{tmp}/o.onnx", "--set", "pipeline..hop_frames=1"],
     "cannot set 'pipeline..hop_frames': a key path is names joined by single dots"),
    # A folder or a device where a file to read was wanted said "not found"
    (["export", "--output", "{tmp}/o.onnx", "--checkpoint", "{tmp}/allowed"],
     "checkpoint {tmp}/allowed is a folder, not a file; check the path given to --checkpoint"),
    (["export", "--output", "{tmp}/o.onnx", "--checkpoint", "/dev/null"],
     "checkpoint /dev/null is a device, not a regular file"),
    (["run", "--config", "{tmp}/allowed"], "config '{tmp}/allowed' is a folder, not a file; pass a YAML path"),
    (["run", "--config", "/dev/null"], "config '/dev/null' is a device, not a regular file; pass a YAML path"),
    (["export", "--output", "{tmp}/o.onnx", "--set", "model.kwargs={width: 3}"],
     "(options sit directly under model:, e.g. model.width, not model.kwargs.width)"),
]
FILES = {  # {tmp}/NAME: its text
    "unclosed.yaml": 'name: cams\nstreams: ["door=rtsp://cam:pw@10.0.0.7/live?token=t0k3n"\n'
                     'pipeline:\n  hop_frames: 4\n',
    "indented.yaml": "pipeline:\n  hop_frames: 4\n max_batch: 8\n",
    "listed.yaml": "model:\n  arch: slowfast\n  num_classes: 8\ncheckpoint: [1, 2]\n",
}


@pytest.mark.parametrize("argv, message", BAD_INPUTS, ids=[" ".join(argv) for argv, _ in BAD_INPUTS])
def test_bad_input_gives_one_clear_line_and_nonzero_exit(tmp_path, argv, message):
    (tmp_path / "allowed").mkdir()  # an empty folder of allowed subscribers
    (tmp_path / "zero.mp4").write_bytes(b"")
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "binary.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    if argv[0] == "run":
        argv = [*RUN, *argv[1:]]
    result = run_cli(*argv, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert lines[-1].startswith("error: ") and message.replace("{tmp}", str(tmp_path)) in lines[-1], result.stderr
    assert [line for line in lines if line.startswith("error: ")] == [lines[-1]]
    assert "Traceback" not in result.stderr
    assert not [line for line in lines if line.startswith(("[ WARN", "[ERROR", "[OPENCV"))], result.stderr
    assert ":pw@" not in result.stderr and "t0k3n" not in result.stderr
    assert not (tmp_path / "d").exists()  # nothing written for a refused key name
