"""The engine contract's inputs, checked once, the same way for every backend.

A wrong shape caught here is one clear line; caught inside ONNX Runtime or TensorRT it is a
stack of C++ messages about tensor names the user never chose.

Every engine takes the clips, uint8 RGB ``[B, frames, size, size, 3]`` per pathway (`InputSpec`).
An engine whose model has an RoI head (per-person actions, `streamrec.models.roi_head`) also
takes ``boxes`` (`BoxesSpec`): float32 ``[N, 5]``, each row (index of its clip in the batch, x1,
y1, x2, y2) in the pixels of the clips' frames, and returns one row of logits per box,
``[N, num_classes]``. `checked_boxes` clips every box to the frame first, as PySlowFast does
before its model, so that no backend's own rule for samples outside the feature map matters; a
box with no area left is refused (TensorRT's RoIAlign plugin averages its empty sample grid as
0 / 0). With no boxes (N = 0) an engine runs nothing and returns ``[0, num_classes]``.

A streaming engine (`streamrec.models.streaming`) takes only each call's new frames, uint8 RGB
``[B, frames_per_call, size, size, 3]`` per pathway (`step_input_specs`), and its carried state
(`StateSpec`): float32 ``state`` ``[B, size]`` in, ``new_state`` ``[B, size]`` out beside the
logits, one row per stream. Its ``step(inputs)`` returns ``(logits, new_state)``; ``infer``
refuses, so no caller can drop a new state by accident. A row of zeros is a stream that starts,
or starts again after an outage; `checked_state` refuses any other engine's state or a row
that is not finite.

`checked_infer` and `checked_step` are the whole check of one call, for every backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np

from streamrec.config import ClipConfig
from streamrec.errors import StreamrecError
from streamrec.sampling import hop_offsets


@dataclass(frozen=True)
class InputSpec:
    """One engine input: uint8 RGB ``[B, frames, size, size, 3]``."""

    name: str
    frames: int
    size: int

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """The shape of one clip, without the batch axis."""
        return (self.frames, self.size, self.size, 3)


def input_specs(clip: ClipConfig) -> tuple[InputSpec, ...]:
    """The inputs a clip contract gives an engine, in the order the model takes them."""
    frames = {"slow": clip.slow_frames, "fast": clip.num_frames, "frames": clip.num_frames}
    return tuple(InputSpec(name, frames[name], clip.crop_size) for name in clip.input_names)


def step_input_specs(clip: ClipConfig, frames_per_call: Mapping[str, int]) -> tuple[InputSpec, ...]:
    """The frame inputs of a streaming engine: each pathway's new frames in one call."""
    return tuple(InputSpec(name, frames_per_call[name], clip.crop_size) for name in clip.input_names)


def hop_input_specs(clip: ClipConfig, hop_frames: int) -> tuple[InputSpec, ...]:
    """The frame inputs of a streaming engine whose call takes a hop of ``hop_frames`` source frames
    at the training rate: every ``sampling_rate``-th of them for Fast (or the only pathway), every
    ``alpha``-th Fast frame for Slow (`streamrec.sampling.hop_offsets`)."""
    fast = len(hop_offsets(clip, hop_frames))  # the scheduler's views take these frames
    return step_input_specs(clip, {"slow": fast // (clip.alpha or 1), "fast": fast, "frames": fast})


def batch_size(inputs: Mapping[str, np.ndarray], specs: tuple[InputSpec, ...], max_batch: int) -> int:
    """The batch size of ``inputs``, after checking names, dtype and shapes against ``specs``."""
    missing = [s.name for s in specs if s.name not in inputs]
    if missing:
        raise StreamrecError(f"engine inputs are missing {', '.join(missing)}; got {', '.join(inputs) or 'none'}")
    sizes = set()
    for spec in specs:
        array = inputs[spec.name]
        if array.dtype != np.uint8 or array.ndim != 5 or array.shape[1:] != spec.clip_shape:
            raise StreamrecError(
                f"engine input '{spec.name}' must be uint8 [B, {', '.join(map(str, spec.clip_shape))}], "
                f"got {array.dtype} {list(array.shape)}"
            )
        sizes.add(array.shape[0])
    if len(sizes) != 1:
        raise StreamrecError(f"engine inputs disagree on the batch size: {sorted(sizes)}")
    size = sizes.pop()
    if not 1 <= size <= max_batch:
        raise StreamrecError(f"batch of {size} clips; this engine takes 1 to {max_batch} (pipeline.max_batch)")
    return size


# The most person boxes one clip brings, where an engine must know a maximum in advance (the
# shapes of TensorRT's optimization profile): a call takes up to this many per clip of its batch.
MAX_BOXES_PER_CLIP = 16


@dataclass(frozen=True)
class BoxesSpec:
    """The RoI engines' ``boxes`` input: float32 ``[N, 5]``, N from 0 to ``max_boxes``, in the
    pixels of square frames of ``frame_size``."""

    name: ClassVar[str] = "boxes"
    columns: ClassVar[int] = 5  # clip index, x1, y1, x2, y2
    frame_size: int
    max_boxes: int


def checked_boxes(inputs: Mapping[str, np.ndarray], spec: BoxesSpec | None, batch: int) -> np.ndarray | None:
    """The boxes of a call (``spec``: the engine's; None for an engine without an RoI head, which
    refuses them), checked against a batch of ``batch`` clips and clipped to the frame."""
    if spec is None:
        if BoxesSpec.name in inputs:
            raise StreamrecError("engine input 'boxes' given, but this engine's model classifies whole clips and "
                                 "takes no boxes; use a model with an RoI head (e.g. configs/slowfast_r50_detection)")
        return None
    if BoxesSpec.name not in inputs:
        raise StreamrecError(f"engine input 'boxes' is missing: this engine's model has an RoI head and takes "
                             f"float32 [N, 5] boxes (clip index, x1, y1, x2, y2 in pixels of the "
                             f"{spec.frame_size}x{spec.frame_size} frames)")
    boxes = inputs[BoxesSpec.name]
    if boxes.dtype != np.float32 or boxes.ndim != 2 or boxes.shape[1] != BoxesSpec.columns:
        raise StreamrecError(f"engine input 'boxes' must be float32 [N, 5] (clip index, x1, y1, x2, y2), "
                             f"got {boxes.dtype} {list(boxes.shape)}")
    if len(boxes) > spec.max_boxes:
        raise StreamrecError(f"{len(boxes)} boxes in one call; this engine takes up to {spec.max_boxes} "
                             f"({MAX_BOXES_PER_CLIP} a clip): keep the largest people of each clip")
    if not np.isfinite(boxes).all():
        raise StreamrecError(f"engine input 'boxes' has a coordinate that is not a number (row "
                             f"{int(np.argwhere(~np.isfinite(boxes))[0][0])}); drop that box")
    index = boxes[:, 0]
    wrong = (index != np.floor(index)) | (index < 0) | (index >= batch)
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise StreamrecError(f"box {row} names clip {index[row]:g} of a batch of {batch}; the first column is "
                             f"the index of the box's clip, 0 to {batch - 1}")
    clipped = boxes.copy()
    np.clip(clipped[:, 1:], 0.0, float(spec.frame_size), out=clipped[:, 1:])
    empty = (clipped[:, 3] <= clipped[:, 1]) | (clipped[:, 4] <= clipped[:, 2])
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise StreamrecError(f"box {row} {boxes[row, 1:].tolist()} has no area inside the "
                             f"{spec.frame_size}x{spec.frame_size} frame (x2 > x1 and y2 > y1 are needed); drop it")
    return clipped


@dataclass(frozen=True)
class StateSpec:
    """A streaming engine's carried state: float32 ``[B, size]`` in as ``state``, out as
    ``new_state``; row ``i`` belongs to the stream of clip ``i`` (its layout is in the graph's
    metadata, ``streaming.state_layout``)."""

    name: ClassVar[str] = "state"
    output: ClassVar[str] = "new_state"
    size: int

    def zeros(self, batch: int = 1) -> np.ndarray:
        """The state of ``batch`` streams that start now."""
        return np.zeros((batch, self.size), np.float32)


@dataclass(frozen=True)
class StreamingSpec:
    """How a streaming engine's calls line up with a stream's frames (an exported graph's metadata
    entry ``streaming``: `streamrec.export.streaming_metadata`). A call takes ``units`` units of
    ``unit_frames`` source frames (at the training rate); its logits describe the ``clip_units``
    units that end ``delay_units`` units before the call's last frame, and are valid once
    ``warmup_units`` units have arrived since the stream's state was zeroed. The head averages
    the last ``average_units`` units of per-step features (a clip's unless a causal model was
    distilled to average fewer)."""

    form: str
    units: int
    unit_frames: int
    delay_units: int
    clip_units: int
    warmup_units: int
    average_units: int

    @property
    def hop_frames(self) -> int:
        return self.units * self.unit_frames

    def delay_s(self, train_fps: float) -> float:
        """Source seconds between the end of the window a call's logits describe and the call's last frame."""
        return self.delay_units * self.unit_frames / train_fps

    def described_window(self, last_fast_time: float, sampling_rate: int, train_fps: float) -> tuple[float, float]:
        """``(start, end)`` on the stream's clock of the window a call's logits describe, from the
        time of the call's last Fast frame: ``clip_units`` long, ending ``delay_units`` units
        before it (never before the stream's first frame, which a warm state comes after)."""
        end = last_fast_time - self.delay_s(train_fps)
        start = end - (self.clip_units * self.unit_frames - sampling_rate) / train_fps
        return max(start, 0.0), end

    @classmethod
    def from_metadata(cls, entry: Mapping) -> "StreamingSpec":
        return cls(**{name: entry[name] for name in cls.__dataclass_fields__})

    def matches(self, form: str, hop_frames: int, average_units: int | None) -> bool:
        """Whether this graph computes what a config's streaming section asks (``average_units``
        None: a clip's)."""
        return (self.form, self.hop_frames, self.average_units) == (form, hop_frames, average_units or self.clip_units)

    def describe(self, *asked: object) -> str:
        """This graph's form, hop and (where not a clip's) average; or, given a config's
        ``(form, hop_frames, average_units)``, those."""
        form, hop_frames, average_units = asked or (self.form, self.hop_frames, self.average_units)
        average = average_units or self.clip_units
        fewer = f", averaging {average} units" if average != self.clip_units else ""
        return f"{form} at a hop of {hop_frames} frames{fewer}"

    @classmethod
    def of_graph(cls, metadata: Mapping | None, state: "StateSpec | None") -> "StreamingSpec | None":
        """The spec an engine's graph metadata records, for an engine that carries state (None for
        a clip engine, or a graph exported without streamrec's metadata)."""
        entry = (metadata or {}).get("streaming") if state is not None else None
        return cls.from_metadata(entry) if entry else None


def checked_state(inputs: Mapping[str, np.ndarray], spec: StateSpec | None, batch: int) -> np.ndarray | None:
    """The state of a call (``spec``: the engine's; None for an engine without carried state,
    which refuses one), checked against a batch of ``batch`` clips."""
    if spec is None:
        if StateSpec.name in inputs:
            raise StreamrecError("engine input 'state' given, but this engine's model classifies whole clips and "
                                 "carries no state; export the streaming form for a streaming engine")
        return None
    if StateSpec.name not in inputs:
        raise StreamrecError(f"engine input 'state' is missing: this engine runs a streaming model and takes "
                             f"float32 [B, {spec.size}] state, one row per stream (zeros for a stream that starts)")
    state = inputs[StateSpec.name]
    if state.dtype != np.float32 or state.shape != (batch, spec.size):
        raise StreamrecError(f"engine input 'state' must be float32 [{batch}, {spec.size}] (a row per clip), "
                             f"got {state.dtype} {list(state.shape)}")
    finite = np.isfinite(state).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise StreamrecError(f"state row {row} holds a value that is not a number; start that stream again "
                             "from a row of zeros")
    return np.ascontiguousarray(state)


def infer_refused(source: str) -> StreamrecError:
    """What a streaming engine (``source``) says to an ``infer`` call."""
    return StreamrecError(f"{source} runs a streaming model, which carries state from call to call: run it with "
                          "step(inputs), which also returns the new state")


def checked_infer(inputs: Mapping[str, np.ndarray], specs: tuple[InputSpec, ...], max_batch: int, *,
                  boxes: BoxesSpec | None, state: StateSpec | None, source: str) -> tuple[int, np.ndarray | None]:
    """An ``infer`` call of the engine ``source`` names: its batch size and checked boxes. An
    engine that carries state (``state`` not None) refuses it, so no new state is dropped."""
    if state is not None:
        raise infer_refused(source)
    size = batch_size(inputs, specs, max_batch)
    checked_state(inputs, None, size)
    return size, checked_boxes(inputs, boxes, size)


def checked_step(inputs: Mapping[str, np.ndarray], specs: tuple[InputSpec, ...], max_batch: int, *,
                 state: StateSpec | None, source: str) -> tuple[int, np.ndarray]:
    """A ``step`` call of the engine ``source`` names: its batch size and checked state rows. An
    engine that runs whole clips (``state`` None) refuses it."""
    if state is None:
        raise StreamrecError(f"{source} classifies whole clips and carries no state: run it with infer(inputs)")
    size = batch_size(inputs, specs, max_batch)
    rows = checked_state(inputs, state, size)
    checked_boxes(inputs, None, size)
    return size, rows
