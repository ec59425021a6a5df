"""Frame geometry shared by capture and training, so a model trains on what it will see."""

from __future__ import annotations

import cv2
import numpy as np


def fit_frame(frame: np.ndarray, short_side: int, crop_size: int) -> np.ndarray:
    """Resize so the short side is ``short_side``, then take the centre ``crop_size`` square."""
    height, width = frame.shape[:2]
    scale = short_side / min(height, width)
    new_w, new_h = max(crop_size, round(width * scale)), max(crop_size, round(height * scale))
    if (new_w, new_h) != (width, height):
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        frame = cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - crop_size) // 2, (new_w - crop_size) // 2
    return frame[top:top + crop_size, left:left + crop_size]


def crop_region(frame: np.ndarray, region: tuple[float, float, float, float]) -> np.ndarray:
    """The part of ``frame`` inside ``region`` = (x, y, width, height) as fractions of the frame."""
    height, width = frame.shape[:2]
    x, y, w, h = region
    left, top = round(x * width), round(y * height)
    return frame[top:top + max(1, round(h * height)), left:left + max(1, round(w * width))]
