"""Boxes as every detector and the tracker hold them: float32 ``[K, 4]`` rows of ``x1, y1, x2, y2``
in the pixels of the frame they were found in (x2 > x1, y2 > y1; the frame's right edge is
x = width), with float32 scores ``[K]`` in [0, 1].

The few operations on them live here, once: overlap, non-maximum suppression, clipping to a
frame and mapping between two frames of one view (a resized frame and its source).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detections:
    """The people found on one keyframe, best score first."""

    boxes: np.ndarray  # float32 [K, 4]: x1, y1, x2, y2 in the pixels of the frame given
    scores: np.ndarray  # float32 [K], in [0, 1]

    def __len__(self) -> int:
        return len(self.scores)

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))

    @staticmethod
    def of(boxes: np.ndarray, scores: np.ndarray) -> "Detections":
        """Detections from any float boxes and scores, sorted by score (best first)."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        order = np.argsort(-scores, kind="stable")
        return Detections(np.ascontiguousarray(boxes[order]), np.ascontiguousarray(scores[order]))


def areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` [N, 4] with every box of ``b`` [M, 4]: [N, M]."""
    a, b = np.asarray(a, np.float32).reshape(-1, 4), np.asarray(b, np.float32).reshape(-1, 4)
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 2], b[None, :, 2])
    bottom = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    union = areas(a)[:, None] + areas(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first: a box is
    dropped when it overlaps a better kept one by more than ``iou_threshold``."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    overlaps = iou_matrix(boxes, boxes)
    kept: list[int] = []
    suppressed = np.zeros(len(order), bool)
    for index in order:
        if suppressed[index]:
            continue
        kept.append(int(index))
        suppressed |= overlaps[index] > iou_threshold
    return np.array(kept, np.int64)


def widen(boxes: np.ndarray, fraction: float) -> np.ndarray:
    """Boxes grown by ``fraction`` of their width and height on every side (a buffer, as in
    C-BIoU tracking: two boxes of a person who moved fast still overlap)."""
    boxes = np.asarray(boxes, np.float32)
    pad = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1) * fraction
    return boxes + pad * np.array([-1, -1, 1, 1], np.float32)


def clip_to_frame(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boxes cut to the frame ``[0, width] x [0, height]``."""
    out = np.asarray(boxes, np.float32).copy()
    out[:, 0::2] = np.clip(out[:, 0::2], 0, width)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, height)
    return out


def scale_boxes(boxes: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Boxes found in a frame of ``from_size`` (width, height) moved to the same view at ``to_size``
    (a resized copy of it, or its source)."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return (np.asarray(boxes, np.float32) * np.array([sx, sy, sx, sy], np.float32)).astype(np.float32)
