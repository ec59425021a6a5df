"""Frame geometry shared by capture and training, so a model trains on what it will see."""

from __future__ import annotations

import cv2
import numpy as np


def fit_frame(frame: np.ndarray, short_side: int, crop_size: int) -> np.ndarray:
    """Resize so the short side is ``short_side``, then take the centre ``crop_size`` square.

    Downscaling halves the frame with area averaging while it is at least twice the target,
    then finishes with one bilinear step (a factor under 2, so it barely aliases). One
    INTER_AREA resize at an arbitrary factor looks the same but costs far more, and on a box
    serving many cameras resizing is most of the capture thread's time (BENCHMARKS.md,
    "Measurements behind design choices").
    """
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


def crop_region(frame: np.ndarray, region: tuple[float, float, float, float]) -> np.ndarray:
    """The part of ``frame`` inside ``region`` = (x, y, width, height) as fractions of the frame."""
    height, width = frame.shape[:2]
    x, y, w, h = region
    left, top = round(x * width), round(y * height)
    return frame[top:top + max(1, round(h * height)), left:left + max(1, round(w * width))]
