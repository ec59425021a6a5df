"""The command line: a thin table of subcommands, each a module in `streamrec.commands`.

Each command module defines ``configure(parser)`` and ``main(args) -> int``; its one-line help
stands in the table below.
Modules are imported only when their command runs, so ``run --backend onnxruntime`` never
imports torch.

What reaches the terminal is streamrec's own: a mistake the user can fix is one line
(`StreamrecError`), every log line and that line pass through `streamrec.redaction.redact`,
and FFmpeg's and OpenCV's own log lines stay off it unless ``--verbose``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import NoReturn

from streamrec import interrupts
from streamrec.errors import StreamrecError
from streamrec.redaction import RedactingFormatter, redact

COMMANDS = {  # name: (module, help)
    "run": ("streamrec.commands.run", "recognise actions on one or more streams and publish events"),
    "subscribe": ("streamrec.commands.subscribe", "print the events a running pipeline publishes"),
    "broker": ("streamrec.commands.broker", "one place to subscribe: a ZeroMQ proxy that many pipelines publish "
                                            "through"),
    "cluster": ("streamrec.commands.cluster", "shard streams over a Ray cluster, with failover and one event record"),
    "bench": ("streamrec.commands.bench", "benchmarks: engine alone, pipeline end to end, and against the usual way"),
    "train": ("streamrec.commands.train", "train a model on procedural clips or a folder of your own clips"),
    "eval": ("streamrec.commands.eval", "score action events against ground-truth segments on long videos"),
    "keys": ("streamrec.commands.keys", "make a CURVE key pair to encrypt and authenticate the event socket"),
    "export": ("streamrec.commands.export", "export a config's model to ONNX (uint8 clips in, logits out)"),
    "build-engine": ("streamrec.commands.build_engine",
                     "build a TensorRT engine, or ONNX Runtime's int8 graph for the CPU, from an ONNX file"),
}
DEFAULT_COMMAND = "run"
STOPS_CLEANLY = ("run", "subscribe", "broker", "cluster")  # they check `interrupts.requested()`; the rest are interrupted
# The libraries' own log lines (a failed open's "[ WARN:...]", FFmpeg's "moov atom not found"),
# which may print a source URL unmasked: off unless --verbose. A variable the user set wins.
QUIET_LIBRARIES = {
    "OPENCV_LOG_LEVEL": "FATAL",  # OpenCV's "[ WARN:...]" and "[ERROR:...]" lines
    "OPENCV_FFMPEG_LOGLEVEL": "-8",  # FFmpeg's, as OpenCV sets it up at each open: AV_LOG_QUIET
}


class OneLineParser(argparse.ArgumentParser):
    """argparse's mistakes (an unknown flag, a value a flag's type refuses) as one line like every
    other (`StreamrecError`), pointing at ``--help`` instead of printing the usage block first."""

    def error(self, message: str) -> NoReturn:
        raise StreamrecError(f"{self.prog}: {message}; see `{self.prog} --help`")


def build_parser(name: str) -> argparse.ArgumentParser:
    """The command line's parser, with every command listed and command ``name`` configured
    (only its module is imported). Its sub-commands' parsers are `OneLineParser`s too."""
    parser = OneLineParser(prog="run_stream.py", description="Real-time action recognition for camera streams.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(command, help=help_text, description=help_text)
        if command == name:
            importlib.import_module(module_name).configure(sub)
            for leaf in _leaves(sub):
                leaf.add_argument("--verbose", action="store_true",
                                  help="also show FFmpeg's and OpenCV's own log lines (which may print source URLs "
                                       "unmasked)")
    return parser


def _leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers that take a command's options: ``parser`` itself, or its sub-commands' (``bench engine``)."""
    subs = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for sub in subs for child in sub.choices.values() for leaf in _leaves(child)]


def quiet_libraries() -> None:
    """Keep FFmpeg's and OpenCV's own log lines off the terminal (`QUIET_LIBRARIES`)."""
    for variable, value in QUIET_LIBRARIES.items():
        os.environ.setdefault(variable, value)
    cv2 = sys.modules.get("cv2")  # OpenCV reads its variable once, on import: set the level itself
    if cv2 is not None and os.environ["OPENCV_LOG_LEVEL"] == QUIET_LIBRARIES["OPENCV_LOG_LEVEL"]:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)


def log_to_stderr() -> None:
    """streamrec's log lines on stderr, each through `redact`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def main(argv: list[str] | None = None) -> int:
    interrupts.install()  # before the command's imports: a Ctrl-C from here on stops cleanly
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, DEFAULT_COMMAND)  # `run_stream.py --quiet` means `run_stream.py run --quiet`
    name = argv[0]
    try:
        args = build_parser(name).parse_args(argv)
        if not getattr(args, "verbose", False):
            quiet_libraries()
        log_to_stderr()
        interrupts.raise_on_stop(name not in STOPS_CLEANLY)
        return importlib.import_module(COMMANDS[name][0]).main(args)
    except KeyboardInterrupt:
        print("streamrec: interrupted", file=sys.stderr)
        return 130
    except StreamrecError as err:
        print(f"error: {redact(str(err))}", file=sys.stderr)
        return 2
    except OSError as err:  # a file or folder given that cannot be read or written: the system's reason
        where = f" {err.filename}" if err.filename else ""
        print(f"error: cannot use{redact(where)}: {err.strerror or err}; give a path that can be read or "
              "written there", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory for what was asked; ask for less (a smaller batch, fewer streams or units, smaller frames)",
              file=sys.stderr)
        return 2
