"""PyTorch engine: the model definition run directly, on the CPU or a CUDA GPU.

Before serving, batch norms are folded into the convolutions that feed them (on every
device: it is exact up to float rounding, and checked on a probe clip each time). On CUDA the
engine also runs in fp16 or bf16 if asked, keeps activations channels-last in reduced precision
(the layout tensor cores want; the uint8 NTHWC input already has it after the permute in
`UInt8Clips`), and replays one CUDA graph per batch size so a call costs one launch.

Folding is tested on the CPU against float32. The CUDA paths (fp16/bf16, channels-last, CUDA
graphs) are checked against float32 by ``tests/gpu/test_gpu_torch_cuda.py``, which needs a CUDA
GPU and is skipped without one.
"""

from __future__ import annotations

import copy
import logging
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from streamrec.backends import call_threads, parallel_calls_need_cpu
from streamrec.backends.inputs import InputSpec, batch_size, input_specs
from streamrec.config import Config
from streamrec.errors import StreamrecError

log = logging.getLogger(__name__)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise StreamrecError("engine.device=cuda but no CUDA GPU is visible to PyTorch; use engine.device=cpu")
    return torch.device(requested)


def device_name(device: torch.device) -> str:
    """``cpu``, or ``cuda:N`` with the index a bare ``cuda`` means (the current device)."""
    if device.type == "cuda":
        return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"
    return device.type


def fold_batch_norms(module: nn.Module, example: Sequence[torch.Tensor]) -> nn.Module:
    """A copy of ``module`` with every batch norm that directly follows a convolution folded into it.

    Which batch norm reads which convolution's output is observed on one forward pass of
    ``example`` (module order alone cannot tell); the folded copy must then reproduce the
    original's output on it, or this raises, so a graph where a convolution's output is also
    read elsewhere can never be folded silently wrong.
    """
    folded = copy.deepcopy(module).eval()
    outputs: dict[int, tuple[nn.Module, torch.Tensor]] = {}  # id(output) -> (conv, output), kept alive
    pairs: list[tuple[nn.Module, nn.Module]] = []

    def after_conv(conv: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        outputs[id(output)] = (conv, output)

    def before_norm(norm: nn.Module, inputs: tuple) -> None:
        conv, output = outputs.get(id(inputs[0]), (None, None))
        if output is inputs[0]:
            pairs.append((conv, norm))

    hooks = [m.register_forward_hook(after_conv) for m in folded.modules() if isinstance(m, CONVOLUTIONS)]
    hooks += [m.register_forward_pre_hook(before_norm) for m in folded.modules() if isinstance(m, BATCH_NORMS)]
    with torch.no_grad():
        reference = folded(*example)
    for hook in hooks:
        hook.remove()
    outputs.clear()

    parents = {id(child): (parent, name) for parent in folded.modules() for name, child in parent.named_children()}
    for conv, norm in pairs:
        conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean, norm.running_var,
                                                      norm.eps, norm.weight, norm.bias)
        parent, name = parents[id(norm)]
        setattr(parent, name, nn.Identity())
    with torch.no_grad():
        result = folded(*example)
    tolerance = 1e-4 * max(1.0, reference.abs().max().item())
    if not torch.allclose(result, reference, rtol=1e-3, atol=tolerance):
        raise RuntimeError(f"folding {len(pairs)} batch norms changed the output by "
                           f"{(result - reference).abs().max().item():.3g}; a folded convolution feeds more than its norm")
    log.debug("folded %d batch norms into convolutions", len(pairs))
    return folded


class CudaGraphs:
    """One captured CUDA graph per batch size: a call copies its inputs in and replays the graph."""

    def __init__(self, module: nn.Module, warmup_iterations: int = 3):
        self.module = module
        self.warmup_iterations = warmup_iterations
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}

    def __call__(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        size = tensors[0].shape[0]
        if size not in self.graphs:
            self.graphs[size] = self._capture(tensors)
        graph, static_inputs, static_output = self.graphs[size]
        for static, tensor in zip(static_inputs, tensors):
            static.copy_(tensor, non_blocking=True)
        graph.replay()
        return static_output

    def _capture(self, tensors: list[torch.Tensor]) -> tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]:
        static_inputs = [t.clone() for t in tensors]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up runs pick cuDNN algorithms outside the capture
            for _ in range(self.warmup_iterations):
                self.module(*static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_output = self.module(*static_inputs)
        log.info("captured a CUDA graph for batch %d", len(tensors[0]))
        return graph, static_inputs, static_output


class TorchEngine:
    name = "torch"

    def __init__(self, module: nn.Module, specs: tuple[InputSpec, ...], device: torch.device,
                 precision: str = "fp32", max_batch: int = 64, cuda_graphs: bool = True, parallel_calls: int = 1):
        if parallel_calls > 1 and device.type == "cuda":
            raise parallel_calls_need_cpu("torch")
        if precision not in DTYPES:
            raise StreamrecError(f"the torch backend runs fp32, fp16 or bf16, not {precision}")
        if precision != "fp32" and device.type != "cuda":
            raise StreamrecError(f"engine.precision={precision} needs a CUDA GPU with the torch backend; "
                                 "use engine.precision=fp32 on the CPU")
        self.specs = specs
        self.torch_device = device
        self.device = device_name(device)
        self.max_batch = max_batch
        self.parallel_calls = parallel_calls  # one module: forward passes on the CPU may run side by side
        probe = [torch.zeros((1, *s.clip_shape), dtype=torch.uint8, device=device) for s in specs]
        module = fold_batch_norms(module.eval().to(device), probe)
        if device.type == "cuda" and precision != "fp32":
            module = module.to(dtype=DTYPES[precision], memory_format=torch.channels_last_3d)
        self.module = module
        self.run = CudaGraphs(module) if device.type == "cuda" and cuda_graphs else (lambda tensors: module(*tensors))

    @classmethod
    def from_config(cls, config: Config) -> "TorchEngine":
        from streamrec.checkpoints import load_model

        threads = call_threads(config.engine)
        if threads > 0:
            torch.set_num_threads(threads)  # process-wide: each call's operators run on this many threads
        return cls(load_model(config), input_specs(config.clip), pick_device(config.engine.device),
                   config.engine.precision, max_batch=config.pipeline.max_batch,
                   parallel_calls=config.engine.parallel_calls)

    @torch.inference_mode()
    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        batch_size(inputs, self.specs, self.max_batch)
        tensors = [torch.from_numpy(np.ascontiguousarray(inputs[s.name])).to(self.torch_device, non_blocking=True)
                   for s in self.specs]
        return self.run(tensors).float().cpu().numpy()
