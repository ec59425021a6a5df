"""``run_stream.py export``: a config's model as an ONNX file for ONNX Runtime and TensorRT.

The graph takes uint8 RGB ``slow``/``fast`` clips (``frames`` for single-pathway models),
normalises inside and returns ``logits``; a streaming config's takes one hop's new frames and the
carried ``state`` and returns ``new_state`` too. See `streamrec.export`.
"""

from __future__ import annotations

import argparse

from streamrec.commands.flags import add_config_flags, config_from_flags
from streamrec.errors import StreamrecError, check_output_path


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
    batch = parse_batch(args.batch)
    check_output_path(args.output, "--output")  # before torch and the model load: a device, FIFO, folder or URL
    from streamrec.export import export_config

    config = config_from_flags(args)
    path = export_config(config, args.output, fp16=args.fp16, batch=batch)
    print(f"wrote {path}: {describe_graph(path)}, {'fp16' if args.fp16 else 'fp32'}")
    return 0


def describe_graph(path) -> str:
    """``slow [batch, 4, 96, 96, 3] uint8, ... -> logits [batch, 7], ...``: what the file takes and
    gives, read back from it (so a streaming export shows its state and frames per call)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    names = {onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16"}

    def shown(value) -> str:
        dims = ", ".join(str(d.dim_value or d.dim_param) for d in value.type.tensor_type.shape.dim)
        return f"{value.name} [{dims}] {names.get(value.type.tensor_type.elem_type, '')}".rstrip()

    return f"{', '.join(map(shown, graph.input))} -> {', '.join(map(shown, graph.output))}"
