"""``run_stream.py export``: a config's model as an ONNX file for ONNX Runtime and TensorRT.

The graph takes uint8 RGB ``slow``/``fast`` clips (``frames`` for single-pathway models),
normalises inside and returns ``logits``; see `streamrec.export`.
"""

from __future__ import annotations

import argparse

from streamrec.commands.flags import add_config_flags, config_from_flags
from streamrec.errors import StreamrecError


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser)
    parser.add_argument("--output", required=True, metavar="FILE.onnx", help="the ONNX file to write")
    parser.add_argument("--fp16", action="store_true",
                        help="compute in float16 (inputs stay uint8, logits float32); for TensorRT fp16 engines")
    parser.add_argument("--batch", default="dynamic", metavar="N|dynamic",
                        help="a fixed batch size, or dynamic (default) for TensorRT batch profiles and ONNX Runtime")


def parse_batch(text: str) -> int | None:
    """``dynamic`` -> None, ``N`` -> N."""
    if text == "dynamic":
        return None
    if not text.isdigit() or int(text) < 1:
        raise StreamrecError(f"--batch must be a positive number or 'dynamic', got '{text}'")
    return int(text)


def main(args: argparse.Namespace) -> int:
    from streamrec.export import export_config

    batch = parse_batch(args.batch)
    config = config_from_flags(args)
    path = export_config(config, args.output, fp16=args.fp16, batch=batch)
    inputs = ", ".join(config.clip.input_names)
    print(f"wrote {path}: uint8 {inputs} -> logits [{batch or 'batch'}, {config.model.num_classes}], "
          f"{'fp16' if args.fp16 else 'fp32'}")
    return 0
