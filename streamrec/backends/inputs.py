"""The engine contract's inputs, checked once, the same way for every backend.

A wrong shape caught here is one clear line; caught inside ONNX Runtime or TensorRT it is a
stack of C++ messages about tensor names the user never chose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from streamrec.config import ClipConfig
from streamrec.errors import StreamrecError


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
