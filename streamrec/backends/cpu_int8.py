"""int8 for ONNX Runtime on the CPU: a Q/DQ graph made by ``onnxruntime.quantization``.

The same calibration clips as TensorRT's int8 (`calibration.calibration_clips`) set each
activation's range; weights are quantized per output channel. ONNX Runtime then runs the
convolutions as ``QLinearConv`` (uint8 activations, int8 weights), which beats float32 on a CPU
with int8 dot products such as AVX-512 VNNI (BENCHMARKS.md times the two side by side).

Three choices come from measurement (figures in BENCHMARKS.md, "Measurements behind design
choices"):
- convolutions with at most `FLOAT_INPUT_CHANNELS` input channels (the RGB stems) stay
  float32: ONNX Runtime's int8 kernel is so slow on so few channels that the Fast stem alone
  outlasted the whole float32 graph;
- the graph goes through ONNX Runtime's quantization pre-processing first (shape inference,
  batch norms folded into the convolutions): without it most convolutions stayed float32;
- the classifier (the final matrix product and what follows it) stays float32: quantizing the
  logits themselves to 256 levels moved them far from float32's; a float32 head keeps them
  close, and was faster too.

A quantized graph runs without the float32 CPU rewrites (`cpu_graph`), which would turn off the
layout optimizer its int8 convolutions need. Quantizing needs the ``onnx`` package; running
the result needs only onnxruntime.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streamrec.errors import StreamrecError

if TYPE_CHECKING:
    import onnx

    from streamrec.config import Config

log = logging.getLogger(__name__)
FLOAT_INPUT_CHANNELS = 4


def cpu_int8_path(onnx_file: Path, sha: str) -> Path:
    """Where the int8 copy of the float32 graph ``onnx_file`` (content hash ``sha``) is kept."""
    return onnx_file.with_name(f"{onnx_file.stem}.cpu-int8.{sha[:12]}.onnx")


def cached_cpu_int8(config: Config) -> Path:
    """The int8 graph `build-engine --backend onnxruntime` made from ``config``'s float32 export."""
    from streamrec.backends.engine_cache import cached_export, sha256_file

    float_graph = cached_export(config, "fp32")
    path = cpu_int8_path(float_graph, sha256_file(float_graph))
    if not path.is_file():
        raise StreamrecError(f"engine.precision=int8 on ONNX Runtime runs a graph quantized once from calibration "
                             f"videos; make it with `python run_stream.py build-engine --backend onnxruntime "
                             f"--precision int8 --onnx {float_graph} --calibration DIR`")
    return path


def is_quantized(model: onnx.ModelProto) -> bool:
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in model.graph.node)


def quantize_for_cpu(onnx_file: Path, clips: dict[str, np.ndarray], output: Path) -> Path:
    """A Q/DQ int8 copy of ``onnx_file`` calibrated on ``clips`` (engine inputs, one clip per row),
    keeping the float32 graph's streamrec metadata so that runs check it against their config."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(onnx_file))
    if is_quantized(model):
        raise StreamrecError(f"{onnx_file} is already quantized; pass the float32 graph from `run_stream.py export`")
    count = len(next(iter(clips.values())))

    class Clips(CalibrationDataReader):
        def __init__(self) -> None:
            self.index = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.index == count:
                return None
            self.index += 1
            return {name: array[self.index - 1:self.index] for name, array in clips.items()}

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch, _quiet_quantizer():
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(onnx_file), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared))
        stems = [node.name for node in graph.graph.node if node.op_type == "Conv"
                 and _input_channels(graph, node) <= FLOAT_INPUT_CHANNELS]
        head = _classifier_head(graph)
        quantize_static(str(prepared), str(output), Clips(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=stems + head)
    quantized = onnx.load(str(output))
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(model.metadata_props)
    onnx.save(quantized, str(output))
    log.info("int8 graph %s: calibrated on %d clips; float32 kept for %d convolution(s) of at most %d input "
             "channels and the classifier's %d node(s)", output.name, count, len(stems), FLOAT_INPUT_CHANNELS,
             len(head))
    return output


@contextlib.contextmanager
def _quiet_quantizer():
    """The quantizer logs a line per shared bias it copies (a hundred for R50) on the root logger:
    keep its warnings, drop that chatter."""

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "onnxruntime" not in record.pathname

    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(keep)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(keep)


def _classifier_head(model: onnx.ModelProto) -> list[str]:
    """The final matrix product(s) and every node after them: the logits stay float32."""
    names = [node.name for node in model.graph.node if node.op_type in ("MatMul", "Gemm")]
    produced = {output for node in model.graph.node if node.name in names for output in node.output}
    for node in model.graph.node:  # nodes are stored in topological order
        if node.name not in names and produced.intersection(node.input):
            names.append(node.name)
            produced.update(node.output)
    return names


def _input_channels(model: onnx.ModelProto, conv: onnx.NodeProto) -> int:
    """A convolution's input channels per group, from its weight ``[out, in, ...]``."""
    weight = next((init for init in model.graph.initializer if init.name == conv.input[1]), None)
    return weight.dims[1] if weight is not None else FLOAT_INPUT_CHANNELS + 1
