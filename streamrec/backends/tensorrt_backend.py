"""TensorRT engine: a serialized engine run through the I/O tensor API.

One engine object owns one execution context, one CUDA stream and its `DeviceMemory`, which
it frees on `close` (TensorRT lets one optimization profile serve one context at a time; a
second stream of work creates a second engine). Buffers are allocated once, at the profile's
maximum batch, pinned on the host and on the device; the uint8 clips cross the bus as uint8
and are normalised inside the engine. Every call TensorRT answers with a bool is checked, and
a refusal is one line carrying TensorRT's own reason (`trt_api.TensorRT.take_errors`).

An engine built from an RoI model's graph also has a float32 ``boxes`` input ``[N, 5]`` and
returns ``logits`` ``[N, num_classes]`` (`streamrec.backends.inputs`); its optimization profile
bounds N as it bounds the batch, and a call with fewer boxes than the profile's minimum is
padded with copies of its first box, whose rows are dropped. ONNX's ``RoiAlign`` reaches
TensorRT as its ``ROIAlign_TRT`` plugin, through the ONNX parser, so the plugin library must be
registered (``trt.init_libnvinfer_plugins``) before an engine holding it is built or loaded.

An engine built from a streaming model's graph also has a float32 ``state`` input ``[B, size]``
and a ``new_state`` output of that shape (`streamrec.backends.inputs.StateSpec`): it runs through
``step``, which stages each stream's state row beside its frames and copies the new rows back
with the logits; ``infer`` refuses it. Rows below the profile's minimum batch are zeros. How its
calls line up with a stream's frames (``streaming``, a `StreamingSpec`) comes from the metadata of
the graph it was built from, which the engine's record keeps (`engine_cache.EngineRecord`).

TensorRT and CUDA are reached only through `trt_api.TensorRT` and `cuda_memory.DeviceMemory`,
so the tests drive this module with stand-ins of both.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from streamrec.backends.cuda_memory import DeviceMemory, Stream
from streamrec.backends.engine_cache import EngineRecord, sha256_bytes
from streamrec.backends.inputs import (
    BoxesSpec,
    InputSpec,
    StateSpec,
    StreamingSpec,
    checked_infer,
    checked_step,
)
from streamrec.backends.trt_api import CudaEngine, TensorRT, TensorRTError
from streamrec.errors import StreamrecError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorInfo:
    """One I/O tensor of an engine, with the shapes its optimization profile allows."""

    name: str
    is_input: bool
    dtype: np.dtype
    min_shape: tuple[int, ...]
    max_shape: tuple[int, ...]


def describe_tensors(engine: CudaEngine, api: TensorRT, source: str = "engine") -> list[TensorInfo]:
    tensors = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        is_input = api.is_input(engine.get_tensor_mode(name))
        shape = tuple(engine.get_tensor_shape(name))
        if is_input and any(d < 0 for d in shape):  # dynamic: the profile bounds it
            low, _, high = (tuple(s) for s in engine.get_tensor_profile_shape(name, 0))
        else:  # static inputs; outputs are sized once the input shapes are set
            low = high = shape
        trt_dtype = engine.get_tensor_dtype(name)
        dtype = api.numpy_dtype(trt_dtype)
        if dtype is None:
            raise StreamrecError(f"{source} {'input' if is_input else 'output'} '{name}' is {trt_dtype}, which numpy "
                                 "cannot hold; export the model with streamrec (uint8 clips in, float32 logits out) "
                                 "and rebuild")
        tensors.append(TensorInfo(name, is_input, dtype, low, high))
    return tensors


def read_plan(path: Path, api: TensorRT, memory: DeviceMemory, record: EngineRecord | None = None) -> bytes:
    """The bytes of a built engine, after checking its record (``record``, when the caller has
    read it already; else read here) against this machine.

    An engine made for another TensorRT version or GPU architecture (compute capability), or
    damaged on disk, is one clear line here, not a TensorRT serialisation assertion later. One
    built on another GPU model of the same architecture runs, with a warning.
    """
    if not path.is_file():
        raise StreamrecError(f"engine file {path} not found; build one with `run_stream.py build-engine --onnx FILE`")
    plan = path.read_bytes()
    record = record or EngineRecord.load(path)
    if record is None:
        return plan  # built elsewhere: TensorRT itself is the only check left
    rebuild = f"rebuild it with `python run_stream.py build-engine --onnx {record.onnx_file}`"
    key = record.key
    if (key.tensorrt_version, key.compute_capability) != (api.version, memory.compute_capability):
        raise StreamrecError(
            f"engine {path.name} was built with TensorRT {key.tensorrt_version} for {key.gpu_name} (compute "
            f"{key.compute_capability}); this machine has TensorRT {api.version} and {memory.device_name} (compute "
            f"{memory.compute_capability}): {rebuild}")
    if key.gpu_name != memory.device_name:  # same architecture: it runs, tuned for the other model
        log.warning("engine %s was tuned on %s, this is %s; for the best speed %s", path.name, key.gpu_name,
                    memory.device_name, rebuild)
    if sha256_bytes(plan) != record.plan_sha256:
        raise StreamrecError(f"engine {path} is damaged (its checksum differs from the one recorded at build): {rebuild}")
    return plan


class TensorRTEngine:
    name = "tensorrt"
    parallel_calls = 1  # one execution context: calls from several threads take turns (the lock below)

    def __init__(self, plan: bytes, api: TensorRT, memory: DeviceMemory, specs: tuple[InputSpec, ...],
                 num_classes: int, source: str = "engine", device: str = "cuda:0", metadata: Mapping | None = None):
        self.specs = specs
        self.metadata = metadata  # the streamrec metadata of the graph it was built from (None: unknown)
        self.api = api
        self.memory = memory
        self.source = source
        self.device = device  # the GPU ``memory`` is on
        self._lock = threading.Lock()
        try:
            with memory.activate():
                try:
                    self.engine = api.deserialize(plan)
                except TensorRTError as err:
                    raise StreamrecError(
                        f"TensorRT {api.version} cannot load {source} ({err}); the file is damaged or was built by "
                        "another TensorRT version or for another GPU: rebuild it with `run_stream.py build-engine`"
                    ) from None
                tensors = describe_tensors(self.engine, api, source)
                extra = (BoxesSpec.name, StateSpec.name)
                self.inputs = [t for t in tensors if t.is_input and t.name not in extra]
                self.boxes_tensor = next((t for t in tensors if t.is_input and t.name == BoxesSpec.name), None)
                self.state_tensor = next((t for t in tensors if t.is_input and t.name == StateSpec.name), None)
                outputs = [t for t in tensors if not t.is_input]
                self._check_contract(outputs, source)
                self.output = next(t for t in outputs if t.name != StateSpec.output)
                self.state_output = next((t for t in outputs if t.name == StateSpec.output), None)
                self.state = StateSpec(self.state_tensor.max_shape[1]) if self.state_tensor else None
                self.streaming = StreamingSpec.of_graph(metadata, self.state)  # how calls line up with frames
                batched = self._batched_inputs()  # the batch sizes every one of them allows
                self.min_batch = max(t.min_shape[0] for t in batched)
                self.max_batch = min(t.max_shape[0] for t in batched)
                self.boxes = (BoxesSpec(specs[0].size, self.boxes_tensor.max_shape[0])  # the boxes the profile allows
                              if self.boxes_tensor else None)  # None: the model classifies whole clips
                self.context = self.engine.create_execution_context()
                self.stream: Stream = memory.stream()
                self.host_buffers, self.device_buffers = self._allocate(num_classes, source)
        except BaseException:
            memory.close()  # nothing this engine allocated outlives a failed start
            raise

    def _check_contract(self, outputs: list[TensorInfo], source: str) -> None:
        by_name = {t.name: t for t in self.inputs}
        wanted = [s.name for s in self.specs]
        wanted_outputs = ["logits", StateSpec.output] if self.state_tensor else ["logits"]
        if sorted(by_name) != sorted(wanted) or sorted(t.name for t in outputs) != sorted(wanted_outputs):
            raise StreamrecError(f"{source} has inputs {sorted(by_name)} and outputs {sorted(t.name for t in outputs)}; "
                                 f"the config's model takes {wanted} and returns {' and '.join(wanted_outputs)}: "
                                 "build it from this config's export")
        for spec in self.specs:
            tensor = by_name[spec.name]
            if tensor.dtype != np.uint8 or tensor.max_shape[1:] != spec.clip_shape:
                streaming = " (a streaming engine: it runs with the streaming: section and hop its graph was exported for)"
                raise StreamrecError(
                    f"{source} input '{spec.name}' is {tensor.dtype} {list(tensor.max_shape)}; the config needs uint8 "
                    f"[B, {', '.join(map(str, spec.clip_shape))}]: export with `run_stream.py export` and rebuild"
                    f"{streaming if self.state_tensor else ''}")
        boxes = self.boxes_tensor
        if boxes is not None and (boxes.dtype != np.float32 or boxes.max_shape[1:] != (BoxesSpec.columns,)):
            raise StreamrecError(f"{source} input 'boxes' is {boxes.dtype} {list(boxes.max_shape)}; an RoI model "
                                 "takes float32 [N, 5]: export with `run_stream.py export` and rebuild")
        state, new_state = self.state_tensor, next((t for t in outputs if t.name == StateSpec.output), None)
        if state is not None and (state.dtype != np.float32 or len(state.max_shape) != 2
                                  or new_state.dtype != np.float32):
            raise StreamrecError(f"{source} input 'state' is {state.dtype} {list(state.max_shape)}; a streaming model "
                                 "carries float32 [B, size] state in and out: export it with export_streaming and "
                                 "rebuild")

    def _batched_inputs(self) -> list[TensorInfo]:
        """The inputs with a row per clip: the clips' pathways and a streaming engine's state."""
        return [*self.inputs, *([self.state_tensor] if self.state_tensor else [])]

    def _allocate(self, num_classes: int, source: str) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """Pinned host and device buffers for every tensor at the largest batch every input allows
        (and the profile's most boxes)."""
        batched = self._batched_inputs()
        shapes = {t.name: (self.max_batch, *t.max_shape[1:]) for t in batched}
        if self.boxes_tensor:
            shapes[BoxesSpec.name] = self.boxes_tensor.max_shape
        inputs = [*batched, *([self.boxes_tensor] if self.boxes_tensor else [])]
        for tensor in inputs:
            self._set_input_shape(tensor, shapes[tensor.name])
        rows = self.boxes.max_boxes if self.boxes else self.max_batch
        output_shape = tuple(self.context.get_tensor_shape(self.output.name))
        if output_shape != (rows, num_classes):
            counted = f"{rows} boxes" if self.boxes else f"batch {rows}"
            raise StreamrecError(f"{source} returns {list(output_shape)} at {counted}; the config's model "
                                 f"has {num_classes} classes: build it from this config's export")
        self.num_classes = num_classes
        outputs = {self.output.name: (output_shape, self.output.dtype)}
        if self.state_output is not None:
            state_shape = tuple(self.context.get_tensor_shape(self.state_output.name))
            if state_shape != shapes[StateSpec.name]:
                raise StreamrecError(f"{source} returns new_state {list(state_shape)} for state "
                                     f"{list(shapes[StateSpec.name])}; re-export it with export_streaming")
            outputs[self.state_output.name] = (state_shape, self.state_output.dtype)
        shapes |= {name: shape for name, (shape, _) in outputs.items()}
        dtypes = {t.name: t.dtype for t in inputs} | {name: dtype for name, (_, dtype) in outputs.items()}
        host, device = {}, {}
        for name, shape in shapes.items():
            host[name] = self.memory.pinned(shape, dtypes[name])
            device[name] = self.memory.allocate(host[name].nbytes)
            if not self.context.set_tensor_address(name, device[name]):
                raise self._refused(f"the device address of '{name}'")
        log.info("tensorrt buffers: %.1f MiB pinned, the same on the GPU (batch up to %d)",
                 sum(a.nbytes for a in host.values()) / 2**20, self.max_batch)
        return host, device

    def _set_input_shape(self, tensor: TensorInfo, shape: tuple[int, ...]) -> None:
        if not self.context.set_input_shape(tensor.name, shape):
            raise self._refused(f"input '{tensor.name}' of shape {list(shape)}")

    def _refused(self, what: str) -> StreamrecError:
        """The one-line error for a call TensorRT answered with False, with its latest reason."""
        errors = self.api.take_errors()
        reason = errors[-1] if errors else "it gave no reason"
        return StreamrecError(f"TensorRT refused {what} for {self.source}: {reason}")

    @property
    def takes_boxes(self) -> bool:
        return self.boxes is not None

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        size, boxes = checked_infer(inputs, self.specs, self.max_batch, boxes=self.boxes, state=self.state,
                                    source=self.source)
        if boxes is not None and not len(boxes):
            return np.zeros((0, self.num_classes), np.float32)  # no one to classify
        return self._execute(inputs, size, boxes)[0]

    def step(self, inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One call of a streaming engine: each clip's new frames and its stream's ``state`` row in,
        ``(logits [B, num_classes], new_state [B, state size])`` out."""
        size, state = checked_step(inputs, self.specs, self.max_batch, state=self.state, source=self.source)
        return self._execute({**inputs, StateSpec.name: state}, size, None)

    def _execute(self, inputs: Mapping[str, np.ndarray], size: int,
                 boxes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Stage the inputs, run, and copy back the logits (and a streaming engine's new state)."""
        run = max(size, self.min_batch)  # below the profile's minimum, pad; the padding's rows are dropped
        rows, out_rows = size, run
        out = self.output.name
        with self._lock, self.memory.activate():
            self.api.take_errors()  # earlier calls' errors were logged when they came
            for tensor in self._batched_inputs():
                staged = self.host_buffers[tensor.name][:run]
                staged[:size] = inputs[tensor.name]
                staged[size:] = 0  # rows below the profile's minimum: a state row of zeros is a fresh stream
                self._set_input_shape(tensor, (run, *tensor.max_shape[1:]))
                self.memory.to_device(self.device_buffers[tensor.name], staged, self.stream)
            if boxes is not None:  # likewise below the profile's minimum count, with copies of the first box
                rows = len(boxes)
                out_rows = max(rows, self.boxes_tensor.min_shape[0])
                staged = self.host_buffers[BoxesSpec.name][:out_rows]
                staged[:rows], staged[rows:] = boxes, boxes[0]
                self._set_input_shape(self.boxes_tensor, (out_rows, BoxesSpec.columns))
                self.memory.to_device(self.device_buffers[BoxesSpec.name], staged, self.stream)
            if not self.context.execute_async_v3(self.stream.handle):
                with_boxes = f" with {out_rows} boxes" if boxes is not None else ""
                raise self._refused(f"to run a batch of {run}{with_boxes}")
            self.memory.to_host(self.host_buffers[out][:out_rows], self.device_buffers[out], self.stream)
            if self.state_output is not None:
                name = self.state_output.name
                self.memory.to_host(self.host_buffers[name][:run], self.device_buffers[name], self.stream)
            self.stream.synchronize()
            logits = self.host_buffers[out][:rows].astype(np.float32)  # copies: the pinned buffers are reused
            if self.state_output is None:
                return logits, None
            return logits, self.host_buffers[self.state_output.name][:size].astype(np.float32)

    def close(self) -> None:
        self.memory.close()
