"""Command-line flags that set config values, declared once for every command that takes them.

A config flag keeps its value as argparse typed it, under the flag's dotted config path;
`config_from_flags` sets those values in the config's data as they are and checks the result
as it checks a file (`streamrec.config.config_from_dict`), so a bad value is the same one-line
error. Nothing a flag carries is read as YAML: ``--event-log "logs/cam #2.jsonl"`` is that file
and ``--event-log on`` a file named ``on``. Only ``--set KEY=VALUE`` is YAML, as in a config
file, and it has the last word.

Every command that builds an engine (run, eval, bench engine / pipeline / compare) takes
`add_config_flags` and `add_engine_flags`; ``tests/test_cli.py`` holds them to it.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Mapping

from streamrec.config import DEFAULT_CONFIG, Config, config_from_dict, load_config
from streamrec.redaction import show_query_keys

GIVEN = "config_values"  # the namespace attribute holding {config path: value} of the flags given
GIVEN_BY = "config_flags"  # ... and {config path: the flag that gave it}, for error messages
ENGINE_FLAGS = ("--backend", "--device", "--precision", "--threads", "--parallel-calls", "--engine")


class ConfigValue(argparse.Action):
    """Keeps a flag's value under its config path (and under the flag's own name, as argparse does).

    A switch (``const=``, no argument) puts ``const`` at the path and True under its name; a
    repeated flag (``repeat=True``) collects a list.
    """

    def __init__(self, option_strings: list[str], dest: str, *, path: str, repeat: bool = False, **kwargs: Any):
        super().__init__(option_strings, dest, **kwargs)
        self.path = path
        self.repeat = repeat

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        given = dict(getattr(namespace, GIVEN, None) or {})  # a copy: never the parser's default
        value = self.const if self.nargs == 0 else values
        if self.repeat:
            value = [*given.get(self.path, []), value]
        given[self.path] = value
        setattr(namespace, GIVEN, given)
        setattr(namespace, GIVEN_BY, {**(getattr(namespace, GIVEN_BY, None) or {}), self.path: self.option_strings[0]})
        setattr(namespace, self.dest, True if self.nargs == 0 else value)


def add_config_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *options: str, path: str,
                    **kwargs: Any) -> argparse.Action:
    """A flag whose value goes to the config at ``path``; with ``const=`` it is a switch that takes no value."""
    if "const" in kwargs:
        kwargs["nargs"] = 0
    return parser.add_argument(*options, action=ConfigValue, path=path, **kwargs)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--checkpoint`` and ``--set``: which config, which weights, and any value."""
    parser.add_argument("--config", help=f"config name in configs/ or a YAML path (default {DEFAULT_CONFIG}, or the "
                                         "config a streamrec --checkpoint was saved with)")
    add_config_flag(parser, "--checkpoint", path="checkpoint", metavar="FILE|zoo:NAME|URL",
                    help="weights to load: PySlowFast .pyth/.pkl, PyTorchVideo, torchvision or streamrec files, a "
                         "model-zoo name (zoo:NAME) or an http(s) URL, downloaded once into $STREAMREC_CACHE "
                         "(default: the config's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config value, VALUE read as YAML, e.g. postprocess.enter_threshold=0.7; "
                             "repeatable, and applied after every other flag")


def add_engine_flags(parser: argparse.ArgumentParser, *, omit: tuple[str, ...] = (),
                     backend_default: str | None = None) -> None:
    """The engine's flags (`ENGINE_FLAGS`), but those in ``omit``, which the command declares
    itself (``bench engine`` takes lists of backends, precisions and parallel calls).
    ``backend_default`` replaces the config's ``engine.backend`` when ``--backend`` is not given."""
    from streamrec.backends import AUTO, all_precisions, backend_names, registered_backends

    names = [*backend_names(), AUTO]
    group = parser.add_argument_group("engine")
    runs = "; ".join(f"{b.name} runs {', '.join(b.precisions)}" for b in registered_backends().values())
    default_backend = backend_default or "the config's"
    flags = {
        "--backend": dict(path="engine.backend", choices=names,
                          help=f"{', '.join(names[:-1])}, or {AUTO}: the fastest this machine can run (default: "
                               f"{default_backend})"),
        "--device": dict(path="engine.device", help="cpu, cuda, cuda:N or auto (default: the config's)"),
        "--precision": dict(path="engine.precision", metavar="PRECISION",
                            help=f"{', '.join(all_precisions())} ({runs}; default: the config's)"),
        "--threads": dict(path="engine.threads", type=int, metavar="N",
                          help="CPU threads for each engine call (default: the config's; 0: the library's default, "
                               "or the cores shared out between --parallel-calls)"),
        "--parallel-calls": dict(path="engine.parallel_calls", type=int, metavar="N",
                                 help="engine calls at once on the CPU, each on its share of the cores (more clips/s "
                                      "on a few cores, each call slower)"),
        "--engine": dict(path="engine.engine_file", metavar="FILE",
                         help="a prebuilt .onnx (ONNX Runtime) or TensorRT engine (default: exported and built into "
                              "engines/)"),
    }
    for option, settings in flags.items():
        if option not in omit:
            add_config_flag(group, option, **settings)
    if backend_default:
        parser.set_defaults(**{GIVEN: {"engine.backend": backend_default}})


def add_hop_flags(parser: argparse.ArgumentParser, *, seconds: bool = True) -> None:
    """``--hop`` (and ``--hop-seconds``): how often each stream is classified."""
    add_config_flag(parser, "--hop", path="pipeline.hop_frames", type=int, metavar="N",
                    help="predict every N source frames (default: the config's)")
    if seconds:
        add_config_flag(parser, "--hop-seconds", path="pipeline.hop_seconds", type=float, metavar="S",
                        help="predict every S seconds (takes precedence over --hop)")


def add_source_flag(parser: argparse.ArgumentParser) -> None:
    """``--source [ID=]SOURCE``, repeatable: the streams to read, in place of the config's ``streams:``."""
    add_config_flag(parser, "--source", path="streams", repeat=True, metavar="[ID=]SOURCE",
                    help="camera index, /dev/videoN, rtsp:// or http(s):// URL, video file, or "
                         "synthetic[:size=WxH,fps=N,frames=N,seed=N,start=SECONDS]; repeat for several streams")


def add_sink_flags(parser: argparse.ArgumentParser) -> None:
    """``--sink URL``, repeatable: message brokers that also receive every event (`streamrec.sinks`)."""
    add_config_flag(parser, "--sink", path="events.sinks", repeat=True, metavar="URL",
                    help="also send every event to a message broker: mqtt://HOST:1883/PREFIX, "
                         "redis://HOST:6379/0?stream=NAME or nats://HOST:4222/SUBJECT; repeatable (docs/events.md)")


def config_from_flags(args: argparse.Namespace, fixed: Mapping[str, Any] | None = None) -> Config:
    """The config ``--config`` names (or the one a streamrec ``--checkpoint`` carries), with the
    flags' values set, then ``fixed`` (values the command decides, by dotted path), then ``--set``.

    Its ``events.show_query_keys`` becomes the process's masking policy (`streamrec.redaction`),
    so events, logs and error lines show a URL alike.
    """
    values = {**(getattr(args, GIVEN, None) or {}), **(fixed or {})}
    flags = {path: flag for path, flag in (getattr(args, GIVEN_BY, None) or {}).items() if path not in (fixed or {})}
    checkpoint = values.get("checkpoint")
    if checkpoint and not args.config:
        from streamrec.checkpoints import checkpoint_config

        config = config_from_dict(checkpoint_config(checkpoint).to_dict(), str(checkpoint), args.set, values, flags)
    else:
        config = load_config(args.config or DEFAULT_CONFIG, args.set, values, flags)
    show_query_keys(config.events.show_query_keys)
    return config


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def int_from(low: int, high: int):
    """An argparse type: an integer from ``low`` to ``high``. The upper end is where a value stops
    being a setting and becomes a crash minutes in (a seed past numpy's, a million threads)."""
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value

    return parse


def c_int(text: str) -> int:
    """An argparse type: an integer from 1 to 2**31 - 1, what a C library's int setting takes."""
    value = positive_int(text)
    if value > 2**31 - 1:
        raise argparse.ArgumentTypeError(f"must be at most {2**31 - 1}, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def float_up_to(high: float):
    """An argparse type: a finite number above 0 and at most ``high``."""
    def parse(text: str) -> float:
        value = positive_float(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be above 0 and at most {high:g}, got {text}")
        return value

    return parse


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number >= 0 (0 often meaning "none": no wait, no extra time)."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


MAX_MINUTES = 24 * 60  # a generated video's length: a day at most (each is written out in full)


def video_minutes(text: str) -> float:
    """An argparse type: a generated video's length in minutes, above 0 and at most `MAX_MINUTES`."""
    value = positive_float(text)
    if value > MAX_MINUTES:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_MINUTES} (a day of video), got {text}")
    return value
