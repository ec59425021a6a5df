"""Frame geometry shared by capture and training, so a model trains on what it will see."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from streamrec.config import ClipConfig


FITS = ("crop", "pad")  # clip.fit: how a frame becomes the model's square input


@dataclass(frozen=True)
class FrameFit:
    """Where a source frame of one size lands in the model's square input: input pixels are
    source pixels times ``scale`` plus ``offset``. A crop's offsets are negative (the frame's edges
    fall outside), a pad's positive (the padding)."""

    scale: float
    offset_x: float
    offset_y: float

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes ``[K, 4]`` (x1, y1, x2, y2) in source pixels -> input pixels."""
        return np.asarray(boxes, np.float32) * self.scale + np.array([self.offset_x, self.offset_y] * 2, np.float32)

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes ``[K, 4]`` in input pixels -> source pixels."""
        return (np.asarray(boxes, np.float32) - np.array([self.offset_x, self.offset_y] * 2, np.float32)) / self.scale


def frame_fit(width: int, height: int, short_side: int, crop_size: int, fit: str = "crop") -> FrameFit:
    """The geometry `fit_frame` applies to a ``width`` x ``height`` frame."""
    if fit == "pad":
        scale = crop_size / max(width, height)
        return FrameFit(scale, (crop_size - round(width * scale)) // 2, (crop_size - round(height * scale)) // 2)
    scale = short_side / min(width, height)
    new_w, new_h = max(crop_size, round(width * scale)), max(crop_size, round(height * scale))
    return FrameFit(scale, -((new_w - crop_size) // 2), -((new_h - crop_size) // 2))


def fit_frame(frame: np.ndarray, short_side: int, crop_size: int, fit: str = "crop",
              pad_colour: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """The model's square input from one frame. ``crop``: resize so the short side is
    ``short_side``, then take the centre ``crop_size`` square (whole-frame classification). ``pad``:
    scale the whole frame so its long side is ``crop_size`` and centre it on ``pad_colour`` (per-person
    mode: nobody at the edges is cut off, and boxes map back with `frame_fit`).

    Downscaling halves the frame with area averaging while it is at least twice the target,
    then finishes with one bilinear step (a factor under 2, so it barely aliases). One
    INTER_AREA resize at an arbitrary factor looks the same but costs far more, and on a box
    serving many cameras resizing is most of the capture thread's time (BENCHMARKS.md,
    "Measurements behind design choices").
    """
    if fit == "pad":
        return _pad_frame(frame, crop_size, pad_colour)
    height, width = frame.shape[:2]
    while min(height, width) >= 2 * short_side:
        height, width = height // 2, width // 2
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)  # exact 2x: the fast path
    scale = short_side / min(height, width)
    new_w, new_h = max(crop_size, round(width * scale)), max(crop_size, round(height * scale))
    if (new_w, new_h) != (width, height):
        frame = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, left = (new_h - crop_size) // 2, (new_w - crop_size) // 2
    return frame[top:top + crop_size, left:left + crop_size]


def _pad_frame(frame: np.ndarray, size: int, colour: tuple[int, int, int]) -> np.ndarray:
    height, width = frame.shape[:2]
    geometry = frame_fit(width, height, size, size, "pad")
    new_w, new_h = round(width * geometry.scale), round(height * geometry.scale)
    while max(height, width) >= 2 * size:
        height, width = height // 2, width // 2
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
    if (new_w, new_h) != (width, height):
        frame = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    out = np.empty((size, size, 3), np.uint8)
    out[:] = colour
    top, left = int(geometry.offset_y), int(geometry.offset_x)
    out[top:top + new_h, left:left + new_w] = frame
    return out


def fit_clip_frame(frame: np.ndarray, clip: ClipConfig) -> np.ndarray:
    """`fit_frame` as a clip contract asks: its sizes, its fit, padded with its mean colour."""
    return fit_frame(frame, clip.short_side, clip.crop_size, clip.fit, pad_colour(clip.mean))


def pad_colour(mean: tuple[float, float, float]) -> tuple[int, int, int]:
    """The colour a clip's mean normalises to zero: what padding should look like to the model."""
    return tuple(int(round(255 * m)) for m in mean)


def crop_region(frame: np.ndarray, region: tuple[float, float, float, float]) -> np.ndarray:
    """The part of ``frame`` inside ``region`` = (x, y, width, height) as fractions of the frame."""
    height, width = frame.shape[:2]
    x, y, w, h = region
    left, top = round(x * width), round(y * height)
    return frame[top:top + max(1, round(h * height)), left:left + max(1, round(w * width))]


def scene_frames(scene, clip: ClipConfig, times: np.ndarray) -> np.ndarray:
    """A generated scene's frames at ``times`` (`streamrec.procedural.Scene`; each the latest frame
    at or before its time, as the scheduler picks by time), fitted to the model's input, each
    frame rendered once however often it is picked."""
    from streamrec.sampling import latest_at_or_before

    indices = latest_at_or_before(scene.times, times)
    rendered = {i: fit_clip_frame(scene.frame(int(i)), clip) for i in np.unique(indices)}
    return np.stack([rendered[i] for i in indices])
