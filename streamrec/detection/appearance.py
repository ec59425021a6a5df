"""What a person looks like, so that the tracker can tell two people apart after their boxes cross.

Boxes alone cannot say who is who once two people have walked through each other: both tracks'
predicted boxes overlap both people. DeepSORT and BoT-SORT add a re-identification network's
embedding; a colour signature is the cheap cue of the same kind, with no weights: what colours a
box holds that its surroundings do not (clothes, not the wall behind them).

A signature is a histogram over hue x saturation for coloured pixels plus a few grey levels for
the rest, of the box minus the ring around it (a background-weighted histogram, as mean-shift
trackers use), normalised and square-rooted, so that the dot product of two signatures is their
Bhattacharyya coefficient.
"""

from __future__ import annotations

import cv2
import numpy as np

from streamrec.detection.boxes import clip_to_frame, widen

HUE_BINS, SATURATION_BINS, GREY_BINS = 16, 4, 4
SIZE = HUE_BINS * SATURATION_BINS + GREY_BINS
GREY_BELOW = 48  # saturation (of 255) under which a pixel's hue means nothing: counted by its value
DARK_BELOW = 40  # value under which a pixel is grey whatever its saturation
RING = 0.5  # the surroundings: the box widened by this fraction of its size on every side


def signatures(frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """float32 [K, SIZE]: each box's colour signature on ``frame`` (RGB uint8 [H, W, 3]; boxes in
    its pixels). A box whose colours are all its surroundings' keeps its own histogram."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    out = np.zeros((len(boxes), SIZE), np.float32)
    if not len(boxes):
        return out
    height, width = frame.shape[:2]
    bins = _bins(frame)
    inner = _pixel_boxes(clip_to_frame(boxes, width, height))
    outer = _pixel_boxes(clip_to_frame(widen(boxes, RING), width, height))
    for k, ((x1, y1, x2, y2), (ox1, oy1, ox2, oy2)) in enumerate(zip(inner, outer)):
        box = np.bincount(bins[y1:y2, x1:x2].ravel(), minlength=SIZE).astype(np.float32)
        around = np.bincount(bins[oy1:oy2, ox1:ox2].ravel(), minlength=SIZE).astype(np.float32) - box
        if box.sum() == 0:
            continue
        own = np.maximum(box - around * (box.sum() / max(around.sum(), 1.0)), 0.0)
        histogram = own if own.sum() > 0 else box
        out[k] = np.sqrt(histogram / histogram.sum())
    return out


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hellinger distance [N, M] between signatures ``a`` [N, SIZE] and ``b`` [M, SIZE]: 0 for equal
    colours, 1 for none shared; 1 where either signature is empty (nothing to compare)."""
    a, b = np.asarray(a, np.float32).reshape(-1, SIZE), np.asarray(b, np.float32).reshape(-1, SIZE)
    shared = np.clip(a @ b.T, 0.0, 1.0)
    empty = (a.sum(1)[:, None] == 0) | (b.sum(1)[None, :] == 0)
    return np.where(empty, 1.0, np.sqrt(1.0 - shared)).astype(np.float32)


def blend(old: np.ndarray, new: np.ndarray, keep: float) -> np.ndarray:
    """A track's signature moved towards a new one (``keep`` of the old), renormalised."""
    if not old.any():
        return new
    if not new.any():
        return old
    mixed = keep * old ** 2 + (1.0 - keep) * new ** 2  # mix the histograms, not their square roots
    return np.sqrt(mixed / mixed.sum()).astype(np.float32)


def _bins(frame: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2HSV)  # hue 0-179, saturation and value 0-255
    hue, saturation, value = (hsv[..., i].astype(np.int32) for i in range(3))
    coloured = (hue * HUE_BINS // 180) * SATURATION_BINS + np.minimum(
        (saturation - GREY_BELOW) * SATURATION_BINS // (256 - GREY_BELOW), SATURATION_BINS - 1)
    grey = HUE_BINS * SATURATION_BINS + value * GREY_BINS // 256
    return np.where((saturation < GREY_BELOW) | (value < DARK_BELOW), grey, coloured)


def _pixel_boxes(boxes: np.ndarray) -> np.ndarray:
    """Boxes as the integer pixel ranges they cover, at least one pixel each."""
    start = np.floor(boxes[:, :2]).astype(np.int64)
    end = np.maximum(np.ceil(boxes[:, 2:]).astype(np.int64), start + 1)
    return np.concatenate([start, end], axis=1)
