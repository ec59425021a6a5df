"""PyTorch engine: the model definition run directly, on the CPU or a CUDA GPU.

Before serving, batch norms are folded into the convolutions that feed them (on every
device: it is exact up to float rounding, and checked on a probe clip each time). On CUDA the
engine also runs in fp16 or bf16 if asked, keeps activations channels-last in reduced precision
(the layout tensor cores want; the uint8 NTHWC input already has it after the permute in
`UInt8Clips`), and replays CUDA graphs captured when it is made, so a call costs one launch.

fp32 means float32 on the GPU too: PyTorch lets cuDNN convolutions round to TF32 by default on
Ampere and newer GPUs (Jetson Orin included), so the fold check and every fp32 forward pass run
under `exact_float32`. Everything on CUDA runs under the engine's own device (``cuda:N``), from
whichever thread calls it.

``tests/gpu/test_gpu_torch_cuda.py`` checks the CUDA paths against float32 on a GPU.

A model with an RoI head (``takes_boxes``) also takes the call's boxes and returns a row per box
(`streamrec.backends.inputs`); it runs without CUDA graphs, whose shapes are fixed when they are
captured, since the number of boxes changes from call to call.

A streaming config's engine (`TorchStreamingEngine`) runs the model's streaming form
(`streamrec.models.streaming`) in float32 under the same ``step`` contract as the ONNX Runtime
and TensorRT engines: each clip's new frames and its stream's state row in, logits and the new
state out.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import warnings
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from streamrec.backends import call_threads, parallel_calls_need_cpu
from streamrec.backends.inputs import (
    MAX_BOXES_PER_CLIP,
    BoxesSpec,
    InputSpec,
    StateSpec,
    StreamingSpec,
    checked_infer,
    checked_step,
    infer_refused,
    input_specs,
    step_input_specs,
)
from streamrec.config import ClipConfig, Config, streaming_hop_frames
from streamrec.errors import StreamrecError

log = logging.getLogger(__name__)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def pick_device(requested: str, setting: str = "engine.device=") -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` as a device, or one line naming ``setting`` (how
    the command took it: a config value, or a flag such as ``--device ``) and the fix."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise StreamrecError(f"{setting}{requested} but no CUDA GPU is visible to PyTorch; use {setting}cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):  # mps, meta, xpu...: not what the engines run on
        raise StreamrecError(f"{setting}{requested} is not a device streamrec runs on: use cpu, cuda, cuda:N or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise StreamrecError(f"{setting}{requested} but PyTorch sees {torch.cuda.device_count()} CUDA GPU(s); "
                             "use cuda:0 to cuda:N-1")
    return device


def device_name(device: torch.device) -> str:
    """``cpu``, or ``cuda:N`` with the index a bare ``cuda`` means (the current device)."""
    if device.type == "cuda":
        return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"
    return device.type


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """Run the block with cuDNN convolutions and cuBLAS matrix products in IEEE float32, not TF32.

    The switches are process-wide; they are restored on the way out. Set through the legacy
    ``allow_tf32`` flags, which keep PyTorch's legacy and newer (``fp32_precision``) settings in
    agreement on every version from 2.4 (mixing the two APIs makes later reads raise).
    """
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch >= 2.9 calls the legacy flags deprecated, once
        saved = cudnn.allow_tf32, matmul.allow_tf32
        cudnn.allow_tf32 = matmul.allow_tf32 = False
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cudnn.allow_tf32, matmul.allow_tf32 = saved


def fold_batch_norms(module: nn.Module, example: Sequence[torch.Tensor]) -> nn.Module:
    """A copy of ``module`` with every batch norm that directly follows a convolution folded into it.

    Which batch norm reads which convolution's output is observed on one forward pass of
    ``example`` (module order alone cannot tell); the folded copy must then reproduce the
    original's output on it, or this raises, so a graph where a convolution's output is also
    read elsewhere can never be folded silently wrong. Both passes run in exact float32: under
    TF32 the two would differ by TF32's rounding, not by the fold.
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
    with torch.no_grad(), exact_float32():
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
    with torch.no_grad(), exact_float32():
        result = folded(*example)
    tolerance = 1e-4 * max(1.0, reference.abs().max().item())
    if not torch.allclose(result, reference, rtol=1e-3, atol=tolerance):
        raise RuntimeError(f"folding {len(pairs)} batch norms changed the output by "
                           f"{(result - reference).abs().max().item():.3g}; a folded convolution feeds more than its norm")
    log.debug("folded %d batch norms into convolutions", len(pairs))
    return folded


def folded_clip_model(model: nn.Module, clip: ClipConfig, device: torch.device | str = "cpu") -> nn.Module:
    """A loaded clip model (`UInt8Clips`) with its batch norms folded, checked on a clip of zeros.
    A streaming form is built over it here and in an exported streaming graph
    (`streamrec.export.folded_model`), so that both carry the same state."""
    probe = [torch.zeros((1, *s.clip_shape), dtype=torch.uint8, device=device) for s in input_specs(clip)]
    return fold_batch_norms(model.eval().to(device), probe)


def batch_buckets(max_batch: int) -> tuple[int, ...]:
    """The batch sizes CUDA graphs are captured for: the powers of two below ``max_batch``, and it."""
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return (*sizes, max_batch)


class CudaGraphs:
    """One CUDA graph per batch bucket (`batch_buckets`), all captured when the engine is made.

    A call copies its inputs into the smallest bucket that holds them, replays that graph and
    returns its own rows (the bucket's other rows hold earlier clips; every clip's row is
    computed on its own, so they change nothing). Capturing every bucket up front keeps
    capture's synchronize and cache flush out of a running stream; the graphs share one memory
    pool and one capture stream, both on the engine's device, since calls never overlap (the
    engine's lock). The caller holds ``torch.cuda.device(device)`` while calling.
    """

    def __init__(self, module: nn.Module, specs: tuple[InputSpec, ...], device: torch.device, max_batch: int,
                 warmup_iterations: int = 3):
        self.module = module
        self.buckets = batch_buckets(max_batch)
        with torch.cuda.device(device):
            self.stream = torch.cuda.Stream()  # on `device`; torch's default capture stream is on the first GPU used
            self.pool = torch.cuda.graph_pool_handle()
            self.graphs = {}
            for size in sorted(self.buckets, reverse=True):  # the largest first: the smaller reuse its pool
                inputs = [torch.zeros((size, *s.clip_shape), dtype=torch.uint8, device=device) for s in specs]
                self.graphs[size] = self._capture(inputs, warmup_iterations)

    def __call__(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        size = tensors[0].shape[0]
        bucket = next(b for b in self.buckets if b >= size)
        graph, static_inputs, static_output = self.graphs[bucket]
        for static, tensor in zip(static_inputs, tensors):
            static[:size].copy_(tensor, non_blocking=True)
        graph.replay()
        return static_output[:size]

    def _capture(self, static_inputs: list[torch.Tensor],
                 warmup_iterations: int) -> tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]:
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):  # warm-up runs pick cuDNN algorithms outside the capture
            for _ in range(warmup_iterations):
                self.module(*static_inputs)
        torch.cuda.current_stream().wait_stream(self.stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            static_output = self.module(*static_inputs)
        log.info("captured a CUDA graph for batch %d", len(static_inputs[0]))
        return graph, static_inputs, static_output


class TorchEngine:
    name = "torch"

    def __init__(self, module: nn.Module, specs: tuple[InputSpec, ...], device: torch.device,
                 precision: str = "fp32", max_batch: int = 64, cuda_graphs: bool = True, parallel_calls: int = 1,
                 compile_module: bool = False, max_boxes: int | None = None):
        """``module``: the engine contract's model (`UInt8Clips`); ``max_boxes``: for a model with an
        RoI head, the most boxes a call takes (default: `MAX_BOXES_PER_CLIP` for each clip of ``max_batch``)."""
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
        self.precision = precision
        self.max_batch = max_batch
        self.parallel_calls = parallel_calls  # one module: forward passes on the CPU may run side by side
        network = getattr(module, "network", module)
        self.boxes = (BoxesSpec(specs[0].size, max_boxes or max_batch * MAX_BOXES_PER_CLIP)
                      if getattr(network, "takes_boxes", False) else None)  # None: it classifies whole clips
        self.num_classes = network.get_classifier().out_features if self.boxes else None
        # Calls on a GPU take turns: the CUDA graphs' buffers, and the process-wide float32 switches, are shared.
        self._lock = threading.Lock() if device.type == "cuda" else contextlib.nullcontext()
        probe = [torch.zeros((1, *s.clip_shape), dtype=torch.uint8, device=device) for s in specs]
        if self.boxes:
            size = float(specs[0].size)
            probe.append(torch.tensor([[0.0, 0.0, 0.0, size, size]], device=device))  # one box, the whole frame
        with self._on_device():
            module = fold_batch_norms(module.eval().to(device), probe)
            if device.type == "cuda" and precision != "fp32":
                module = module.to(dtype=DTYPES[precision], memory_format=torch.channels_last_3d)
            if compile_module:
                module = torch.compile(module)  # compiled on the first calls: the graphs' warm-up, or the first infer
            self.module = module
            if device.type == "cuda" and cuda_graphs and not self.boxes:
                with torch.inference_mode():
                    self.run = CudaGraphs(module, specs, device, max_batch)
            else:
                self.run = lambda tensors: module(*tensors)

    @classmethod
    def from_config(cls, config: Config, compile_module: bool = False) -> "TorchEngine":
        from streamrec.checkpoints import load_model

        threads = call_threads(config.engine)
        if threads > 0:
            torch.set_num_threads(threads)  # process-wide: each call's operators run on this many threads
        return cls(load_model(config), input_specs(config.clip), pick_device(config.engine.device),
                   config.engine.precision, max_batch=config.pipeline.max_batch,
                   parallel_calls=config.engine.parallel_calls, compile_module=compile_module)

    @contextlib.contextmanager
    def _on_device(self) -> Iterator[None]:
        """On CUDA: the engine's own GPU as the current device (it is per thread), and exact
        float32 for fp32. Nothing to set on the CPU."""
        if self.torch_device.type != "cuda":
            yield
            return
        with torch.cuda.device(self.torch_device), (exact_float32() if self.precision == "fp32"
                                                     else contextlib.nullcontext()):
            yield

    @property
    def takes_boxes(self) -> bool:
        return self.boxes is not None

    @torch.inference_mode()
    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        size, boxes = checked_infer(inputs, self.specs, self.max_batch, boxes=self.boxes, state=None,
                                    source="this torch engine")
        if boxes is not None and not len(boxes):
            return np.zeros((0, self.num_classes), np.float32)  # no one to classify
        arrays = [inputs[s.name] for s in self.specs] + ([boxes] if boxes is not None else [])
        with self._lock, self._on_device():
            tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.torch_device, non_blocking=True)
                       for a in arrays]
            return self.run(tensors).float().cpu().numpy()


class TorchStreamingEngine:
    """A clip model's streaming form in PyTorch: ``step(inputs) -> (logits, new_state)``, as
    `streamrec.backends.inputs` describes. Batch norms are folded into the clip model first
    (its forward pass shows which convolution feeds which norm), then the streaming form is built
    over the folded modules, so both forms share the same arithmetic."""

    name = "torch"
    takes_boxes = False

    def __init__(self, model: nn.Module, clip: ClipConfig, device: torch.device, *, form: str, hop_frames: int,
                 average_units: int | None = None, max_batch: int = 64, parallel_calls: int = 1):
        from streamrec.export import streaming_metadata
        from streamrec.models.streaming import streaming_network, units_in_hop

        if parallel_calls > 1 and device.type == "cuda":
            raise parallel_calls_need_cpu("torch")
        self.torch_device = device
        self.device = device_name(device)
        self.max_batch = max_batch
        self.parallel_calls = parallel_calls
        units = units_in_hop(model, clip, hop_frames)  # a hop of part of a unit is refused before any folding
        folded = folded_clip_model(model, clip, device)
        self.network = streaming_network(folded, clip, form=form, units=units, average_units=average_units).to(device)
        self.specs = step_input_specs(clip, self.network.frames_per_call())
        self.state = StateSpec(self.network.layout.size)
        self.streaming = StreamingSpec.from_metadata(streaming_metadata(self.network))

    @classmethod
    def from_config(cls, config: Config) -> "TorchStreamingEngine":
        from streamrec.checkpoints import load_model

        if config.engine.precision != "fp32":
            raise StreamrecError(f"a streaming config runs fp32 on the torch backend, not {config.engine.precision}; "
                                 "set engine.precision=fp32")
        threads = call_threads(config.engine)
        if threads > 0:
            torch.set_num_threads(threads)
        return cls(load_model(config), config.clip, pick_device(config.engine.device), form=config.streaming.form,
                   hop_frames=streaming_hop_frames(config), average_units=config.streaming.average_units,
                   max_batch=config.pipeline.max_batch,
                   parallel_calls=config.engine.parallel_calls)

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        raise infer_refused("this torch engine")

    @torch.inference_mode()
    def step(self, inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Each clip's new frames and its stream's ``state`` row in, ``(logits, new_state)`` out."""
        _, state = checked_step(inputs, self.specs, self.max_batch, state=self.state, source="this torch engine")
        tensors = [torch.from_numpy(np.ascontiguousarray(inputs[s.name])).to(self.torch_device) for s in self.specs]
        logits, new_state = self.network(*tensors, torch.from_numpy(state).to(self.torch_device))
        return logits.float().cpu().numpy(), new_state.float().cpu().numpy()
