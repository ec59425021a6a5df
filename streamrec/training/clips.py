"""A training clip: the frames a stream would take, fitted as the capture thread fits them,
optionally augmented.

Frames are picked by `sampling.clip_indices` and fitted with the capture thread's own
`fit_clip_frame` (cropped or letterboxed, as ``clip.fit`` says), so a model trains on what it will see.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from streamrec.config import ClipConfig
from streamrec.sampling import clip_indices
from streamrec.training.windows import Video
from streamrec.transforms import fit_clip_frame, fit_frame, frame_fit


@dataclass(frozen=True)
class Augmentation:
    """Drawn once per clip, applied to every frame alike (the figure must not jump between frames)."""

    zoom: float  # > 1 zooms in
    shift: tuple[float, float]  # where the crop sits, 0..1 of the slack
    gain: np.ndarray  # per-channel contrast
    offset: float  # brightness
    jpeg_quality: int | None  # compress each source frame like a camera's encoder

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "Augmentation":
        return cls(
            zoom=float(rng.uniform(0.92, 1.2)),
            shift=(float(rng.random()), float(rng.random())),
            gain=(rng.uniform(0.75, 1.25) * rng.uniform(0.9, 1.1, 3)).astype(np.float32),
            offset=float(rng.uniform(-25, 25)),
            jpeg_quality=int(rng.integers(30, 90)) if rng.random() < 0.3 else None,
        )


def fit_clip(frames: list[np.ndarray], clip: ClipConfig, augment: Augmentation | None = None) -> np.ndarray:
    """Source frames → uint8 ``[T, crop, crop, 3]``: exactly `fit_clip_frame` without augmentation.

    With ``clip.fit: crop`` augmentation zooms and shifts the crop; with ``pad`` the frame stays
    where capture letterboxes it (person boxes map into it with `frame_fit`) and only the
    picture's colours change, never the padding's. Left-right flips are deliberately absent: they
    would turn walking left into walking right.
    """
    if augment is None:
        return np.stack([fit_clip_frame(f, clip) for f in frames])
    if clip.fit == "pad":
        return _letterboxed(frames, clip, augment)
    field = max(clip.crop_size, round(clip.crop_size * augment.zoom))
    short = max(field, round(clip.short_side * augment.zoom))
    stacked = np.stack([fit_frame(_compressed(frame, augment), short, field) for frame in frames])
    top = int(augment.shift[0] * (field - clip.crop_size))
    left = int(augment.shift[1] * (field - clip.crop_size))
    return _recoloured(stacked[:, top:top + clip.crop_size, left:left + clip.crop_size], augment)


def _letterboxed(frames: list[np.ndarray], clip: ClipConfig, augment: Augmentation) -> np.ndarray:
    out = np.stack([fit_clip_frame(_compressed(f, augment), clip) for f in frames])
    height, width = frames[0].shape[:2]
    geometry = frame_fit(width, height, clip.short_side, clip.crop_size, "pad")
    top, left = int(geometry.offset_y), int(geometry.offset_x)
    bottom, right = top + round(height * geometry.scale), left + round(width * geometry.scale)
    out[:, top:bottom, left:right] = _recoloured(out[:, top:bottom, left:right], augment)
    return out


def _compressed(frame: np.ndarray, augment: Augmentation) -> np.ndarray:
    """The frame after a camera encoder's JPEG round trip, when the augmentation has one."""
    if not augment.jpeg_quality:
        return frame
    _, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, augment.jpeg_quality])
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


def _recoloured(pixels: np.ndarray, augment: Augmentation) -> np.ndarray:
    """Contrast (per channel, about the pixels' mean) and brightness, alike on every frame."""
    pixels = pixels.astype(np.float32)
    mean = pixels.mean()
    return np.clip((pixels - mean) * augment.gain + mean + augment.offset, 0, 255).astype(np.uint8)


def cut_clip(video: Video, end: int, clip: ClipConfig, augment: Augmentation | None = None) -> np.ndarray:
    """The clip ending at frame ``end``, its frames picked as a stream's (`sampling.clip_indices`), fitted."""
    indices = [int(i) for i in clip_indices(clip, video.fps, end, 0, lambda idx: video.times[idx])]
    rendered = {i: video.frame(i) for i in set(indices)}  # at low frame rates a clip repeats frames
    return fit_clip([rendered[i] for i in indices], clip, augment)
