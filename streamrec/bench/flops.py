"""How much arithmetic one clip costs, and how much the device could do: the roofline's two ends.

FLOPs are counted, never looked up: 2 × the multiply-accumulates of every convolution and
matrix product (one multiply-accumulate = 2 FLOPs). Element-wise work, pooling and
normalisation are not counted; for a SlowFast they are well under 1% of the total. With
PyTorch installed the count runs the config's model under `torch.utils.flop_counter`;
without it (an ONNX Runtime-only install) it walks the exported ONNX graph.

The device's peak is measured by a matrix-multiply probe (float32 on the CPU, float16 on a
CUDA GPU, the precision its fastest units run) unless the user gives it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from streamrec.config import Config
from streamrec.errors import StreamrecError

COUNTING = ("FLOPs = 2 x multiply-accumulates of convolutions and matrix products "
            "(element-wise ops, pooling, norms not counted)")


def flops_per_clip(config: Config, onnx_file: str | Path | None = None) -> tuple[float, str]:
    """FLOPs of one clip through the config's model, and how they were counted."""
    try:
        import torch  # noqa: F401
    except ImportError:
        if onnx_file is None:
            raise StreamrecError("counting FLOPs needs PyTorch or an exported ONNX file; install torch or pass "
                                 "--engine")
        return count_onnx_flops(onnx_file), f"{COUNTING}; counted on the ONNX graph {Path(onnx_file).name}"
    return count_torch_flops(config), f"{COUNTING}; counted by torch.utils.flop_counter at batch 1"


def count_torch_flops(config: Config) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from streamrec.backends.inputs import input_specs
    from streamrec.checkpoints import load_model

    model = load_model(config.replace(checkpoint=None))  # the weights do not change the count
    inputs = [torch.zeros((1, *spec.clip_shape), dtype=torch.uint8) for spec in input_specs(config.clip)]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return float(counter.get_total_flops())


def count_onnx_flops(path: str | Path) -> float:
    """FLOPs of Conv, Gemm and MatMul nodes of an ONNX graph at batch 1, from inferred shapes."""
    import onnx
    from onnx import shape_inference

    graph_model = onnx.load(str(path))
    for graph_input in graph_model.graph.input:  # a dynamic batch axis becomes 1
        dims = graph_input.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    inferred = shape_inference.infer_shapes(graph_model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    shapes.update({t.name: list(t.dims) for t in inferred.graph.initializer})
    total = 0.0
    for node in inferred.graph.node:
        if node.op_type == "Conv":
            weight, output = shapes.get(node.input[1]), shapes.get(node.output[0])
            if weight and output:  # each output element: in_channels/groups * kernel multiply-adds
                total += 2.0 * float(np.prod(output)) * float(np.prod(weight[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, output = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and output:
                total += 2.0 * float(np.prod(output)) * a[-1]
    if total == 0:
        raise StreamrecError(f"no shapes could be inferred for the convolutions of {path}; pass --peak-gflops "
                             "and read FLOPs from the model's documentation")
    return total


def measure_peak_gflops(device: str) -> tuple[float, str]:
    """The best GFLOP/s of a large matrix product on ``device`` (``cpu`` or ``cuda[:N]``)."""
    if device.startswith("cuda"):
        return _cuda_matmul_gflops(device)
    return _cpu_matmul_gflops()


def _cpu_matmul_gflops(size: int = 2048, repeats: int = 10) -> tuple[float, str]:
    """float32, all cores, best of ``repeats``: PyTorch's kernels where installed, else numpy's BLAS."""
    try:
        import torch
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    a, b = rng.random((size, size), dtype=np.float32), rng.random((size, size), dtype=np.float32)
    if torch is not None:
        a, b = torch.from_numpy(a), torch.from_numpy(b)
        multiply, library = torch.mm, f"torch.mm ({torch.get_num_threads()} threads)"
    else:
        multiply, library = np.matmul, "numpy.matmul"
    multiply(a, b)
    best = min(_seconds(lambda: multiply(a, b)) for _ in range(repeats))
    return 2.0 * size**3 / best / 1e9, f"measured: float32 {size}x{size} matrix product, {library}, best of {repeats}"


def _cuda_matmul_gflops(device: str, size: int = 8192, repeats: int = 20) -> tuple[float, str]:
    """float16 on the GPU, timed with CUDA events. NOT RUN in this project (no GPU here)."""
    import torch

    a = torch.randn(size, size, device=device, dtype=torch.float16)
    b = torch.randn(size, size, device=device, dtype=torch.float16)
    for _ in range(3):
        torch.mm(a, b)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        torch.mm(a, b)
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000.0 / repeats
    name = torch.cuda.get_device_name(torch.device(device))
    return (2.0 * size**3 / seconds / 1e9,
            f"measured: float16 {size}x{size} matrix product on {name}, torch.mm, mean of {repeats} (CUDA events)")


def _seconds(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start
