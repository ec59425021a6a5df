"""Which source frames make a clip, and how often a stream takes one: PySlowFast's sampling,
by index and by timestamp, and the hop.

Training and streaming must pick frames the same way, or a model sees at run time clips
unlike those it learned from. The scheduler, the training data, evaluation and int8
calibration all call `clip_indices` and `hop_frames`; nothing else decides either. A streaming
model's views are each hop's new frames on its unit grid instead (`hop_indices`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from streamrec.config import ClipConfig, PipelineConfig

TIME_TOLERANCE_S = 1e-3  # a frame this close to a wanted time counts as on it (timestamps carry rounding)
FPS_TOLERANCE = 0.01  # within 1% of the training rate, frames are picked by index


def fast_offsets(clip: ClipConfig) -> np.ndarray:
    """Offsets of the Fast (or only) pathway's frames within a span of ``num_frames * sampling_rate``.

    ``floor(linspace(0, span - 1, num_frames))``: PySlowFast's ``temporal_sampling`` at the
    training frame rate.
    """
    return np.floor(np.linspace(0, clip.span - 1, clip.num_frames)).astype(np.int64)


def slow_positions(clip: ClipConfig) -> np.ndarray:
    """Positions of the Slow pathway's frames *among the Fast frames* (``pack_pathway_output``)."""
    if not clip.alpha:
        return np.arange(clip.num_frames)
    return np.floor(np.linspace(0, clip.num_frames - 1, clip.num_frames // clip.alpha)).astype(np.int64)


def keyframe_position(clip: ClipConfig) -> int:
    """The keyframe's position among a clip's Fast (or only) frames: the middle one, where AVA
    labels people and per-person mode finds them."""
    return clip.num_frames // 2


def clip_duration(clip: ClipConfig) -> float:
    """Seconds from the first to the last frame of a clip at the training frame rate."""
    return (clip.span - 1) / clip.train_fps


def frames_for_duration(clip: ClipConfig, fps: float) -> int:
    """How many source frames at ``fps`` cover one clip (for sizing the ring buffer)."""
    return int(np.ceil(clip_duration(clip) * fps)) + 1


def by_index(clip: ClipConfig, fps: float) -> bool:
    """Whether frames are picked by index (the source runs at the training rate) or by timestamp."""
    return abs(fps - clip.train_fps) <= FPS_TOLERANCE * clip.train_fps


def clip_window(clip: ClipConfig, fps: float) -> int:
    """Source frames one clip spans at ``fps``: the reference span by index; by time, every frame
    that can hold one of the clip's seconds."""
    return clip.span if by_index(clip, fps) else frames_for_duration(clip, fps) + 1


def clip_indices(clip: ClipConfig, fps: float, end: int, first: int,
                 times_of: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Absolute indices of the Fast (or only) pathway's frames of the clip ending at frame ``end``.

    By index when the source runs at the training rate and a full span ``[end - span + 1, end]``
    exists; otherwise by timestamp over the frames ``first..end`` (the oldest one can still be
    read), whose times ``times_of(indices)`` gives. A clip with too little history repeats its
    earliest frame, as PySlowFast's clamped sampling does.
    """
    if by_index(clip, fps) and end - clip.span + 1 >= first:
        return end - clip.span + 1 + fast_offsets(clip)
    candidates = np.arange(first, end + 1)
    times = times_of(candidates)
    return candidates[indices_by_time(clip, times, times[-1])]


def hop_offsets(clip: ClipConfig, hop: int) -> np.ndarray:
    """Offsets of a streaming hop's Fast (or only) frames among its ``hop`` source frames at the
    training rate: every ``sampling_rate``-th from the first, the unit grid of docs/streaming.md.
    Slow takes every ``alpha``-th of them (`split_hop_pathways`): the first of each unit."""
    return np.arange(0, hop, clip.sampling_rate)


def hop_indices(clip: ClipConfig, fps: float, hop: int, start: int, start_time: float, first: int, end: int,
                times_of: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Absolute indices of the Fast (or only) frames of a streaming hop of ``hop`` frames at the
    training rate whose first frame is ``start`` (its time ``start_time``).

    By index at the training rate: ``start + hop_offsets``. Otherwise by timestamp, as
    `indices_by_time` picks a clip's: each wanted time ``start_time + offset / train_fps`` takes
    the latest frame at or before it among frames ``first..end``, whose times ``times_of`` gives.
    """
    offsets = hop_offsets(clip, hop)
    if by_index(clip, fps):
        return start + offsets
    candidates = np.arange(first, end + 1)
    return candidates[latest_at_or_before(times_of(candidates), start_time + offsets / clip.train_fps)]


def latest_at_or_before(times: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Positions in ``times`` (ascending seconds) of the latest frame at or before each wanted
    time, a frame within `TIME_TOLERANCE_S` of it counting as on it (the first frame for a time
    before them all): how every frame is picked by time."""
    return (np.searchsorted(times, wanted + TIME_TOLERANCE_S, side="right") - 1).clip(0, len(times) - 1)


def hop_frames(pipeline: PipelineConfig, fps: float, stream_hop_frames: int | None = None) -> int:
    """Source frames between two views of a stream: the stream's own ``hop_frames``, else
    ``pipeline.hop_seconds`` at the stream's frame rate, else ``pipeline.hop_frames``."""
    if stream_hop_frames:
        return stream_hop_frames
    if pipeline.hop_seconds:
        return max(1, round(pipeline.hop_seconds * fps))
    return pipeline.hop_frames


def indices_by_time(clip: ClipConfig, times: np.ndarray, end_time: float) -> np.ndarray:
    """Pick Fast frames by timestamp so a clip covers the same seconds at any source frame rate.

    ``times`` are the candidate frames' timestamps in seconds, ascending; the clip ends at
    ``end_time``. Each wanted time ``end_time - (span - 1 - offset) / train_fps`` takes the
    latest frame at or before it (rounding down, as PySlowFast's sampling does; a frame within
    a millisecond of the wanted time counts as on it). Returns positions into ``times``. At the
    training frame rate with exact timestamps this equals `fast_offsets`.
    """
    return latest_at_or_before(times, end_time - (clip.span - 1 - fast_offsets(clip)) / clip.train_fps)


def split_hop_pathways(clip: ClipConfig, fast: np.ndarray, slow_out: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A streaming engine's inputs from a hop's Fast frames ``[..., T_fast, H, W, 3]``: Slow is
    every ``alpha``-th of them, the first of each unit (copied into ``slow_out`` if given)."""
    if not clip.alpha:
        return {"frames": fast}
    slow = np.arange(0, fast.shape[-4], clip.alpha)
    return {"slow": np.take(fast, slow, axis=-4, out=slow_out, mode="clip"), "fast": fast}


def split_pathways(clip: ClipConfig, fast: np.ndarray, slow_out: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Engine inputs from the Fast frames ``[..., T_fast, H, W, 3]`` (the Slow view is a subset,
    copied into ``slow_out`` if given)."""
    if not clip.alpha:
        return {"frames": fast}
    return {"slow": np.take(fast, slow_positions(clip), axis=-4, out=slow_out, mode="clip"), "fast": fast}
