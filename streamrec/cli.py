"""The command line: a thin table of subcommands, each a module in `streamrec.commands`.

Each command module defines ``configure(parser)`` and ``main(args) -> int``; its one-line help
stands in the table below.
Modules are imported only when their command runs, so ``run --backend onnxruntime`` never
imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from streamrec.errors import StreamrecError

COMMANDS = {  # name: (module, help)
    "run": ("streamrec.commands.run", "recognise actions on one or more streams and publish events"),
    "subscribe": ("streamrec.commands.subscribe", "print the events a running pipeline publishes"),
from streamrec import interrupts
    "broker": ("streamrec.commands.broker", "one place to subscribe: a ZeroMQ proxy that many pipelines publish "
                                            "through"),
    "bench": ("streamrec.commands.bench", "benchmarks: engine alone, pipeline end to end, and against the usual way"),
    "train": ("streamrec.commands.train", "train a model on procedural clips or a folder of your own clips"),
    "eval": ("streamrec.commands.eval", "score action events against ground-truth segments on long videos"),
    "keys": ("streamrec.commands.keys", "make a CURVE key pair to encrypt and authenticate the event socket"),
    "export": ("streamrec.commands.export", "export a config's model to ONNX (uint8 clips in, logits out)"),
    "build-engine": ("streamrec.commands.build_engine",
                     "build a TensorRT engine, or ONNX Runtime's int8 graph for the CPU, from an ONNX file"),
}
DEFAULT_COMMAND = "run"


def build_parser(name: str) -> argparse.ArgumentParser:
    """The command line's parser, with every command listed and command ``name`` configured
    (only its module is imported)."""
    parser = argparse.ArgumentParser(prog="run_stream.py", description="Real-time action recognition for camera streams.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(command, help=help_text, description=help_text)
        if command == name:
            importlib.import_module(module_name).configure(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, DEFAULT_COMMAND)  # `run_stream.py --quiet` means `run_stream.py run --quiet`
    name = argv[0]
    try:
        args = build_parser(name).parse_args(argv)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            stream=sys.stderr)
        return importlib.import_module(COMMANDS[name][0]).main(args)
    except StreamrecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    interrupts.install()  # before the command's imports: a Ctrl-C from here on stops cleanly
