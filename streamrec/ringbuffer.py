"""Per-stream frame store: preallocated, one writer (the capture thread), many readers.

Frames are addressed by their absolute index in the stream. The writer fills the slot of
index ``head`` and only then advances ``head``, so readers can check afterwards, seqlock
style, that no slot they copied was reused while they copied it: a frame being overwritten
is never returned half-written. Memory per stream is fixed at construction.

The writer also marks where an unbroken run of frames (a segment) starts: after a reopen, or
after a gap in the source's clock. A reader never cuts a clip across a segment start.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


class FramesGone(Exception):
    """The frames asked for were overwritten (or never written); the reader was too slow."""


@dataclass(frozen=True)
class Frames:
    pixels: np.ndarray  # uint8 [N, H, W, 3], a copy owned by the reader (its ``out`` array, if it gave one)
    indices: np.ndarray  # int64 [N], absolute frame indices
    capture_times: np.ndarray  # float64 [N], time.monotonic() when each frame was read
    media_times: np.ndarray  # float64 [N], seconds on the source's own clock


class RingBuffer:
    def __init__(self, capacity: int, height: int, width: int):
        if capacity < 2:
            raise ValueError("a ring buffer needs at least 2 slots")
        self.capacity = capacity
        self._pixels = np.zeros((capacity, height, width, 3), np.uint8)
        self._capture_times = np.zeros(capacity, np.float64)
        self._media_times = np.zeros(capacity, np.float64)
        self._segment_starts = np.zeros(capacity, np.int64)  # per slot: the first frame of its segment
        self._segment = 0  # the first frame of the segment being written
        self._head = 0  # index of the next frame to write; frames [head - capacity + 1, head) are readable
        self._released = 0  # frames below this index are no longer needed by any reader (offline mode)
        self._changed = threading.Condition()

    @property
    def nbytes(self) -> int:
        return self._pixels.nbytes + self._capture_times.nbytes + self._media_times.nbytes

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return self._pixels.shape[1:]

    @property
    def head(self) -> int:
        """Number of frames written so far (the index the next frame will get)."""
        return self._head

    def oldest_readable(self) -> int:
        # The slot of `head` may be mid-write, so the frame it held (head - capacity) is not readable.
        return max(0, self._head - self.capacity + 1)

    def write(self, pixels: np.ndarray, capture_time: float, media_time: float, new_segment: bool = False) -> int:
        """Store one frame; returns its index. ``new_segment``: the source broke off before this frame
        (a reopen, a gap), so no clip may join it to the frames before. Called by the single writer only."""
        index = self._head
        slot = index % self.capacity
        if new_segment:
            self._segment = index
        self._pixels[slot] = pixels
        self._capture_times[slot] = capture_time
        self._media_times[slot] = media_time
        self._segment_starts[slot] = self._segment
        with self._changed:
            self._head = index + 1
            self._changed.notify_all()
        return index

    def read(self, indices: np.ndarray, out: np.ndarray | None = None) -> Frames:
        """Copy the frames with these absolute indices (into ``out``, uint8 [N, H, W, 3], if given),
        or raise `FramesGone`."""
        indices = np.asarray(indices, np.int64)
        if indices.size and (indices.min() < self.oldest_readable() or indices.max() >= self._head):
            raise FramesGone(f"frames {indices.min()}..{indices.max()} not in buffer "
                             f"[{self.oldest_readable()}, {self._head})")
        slots = indices % self.capacity
        frames = Frames(
            # copies only these frames; "clip" (the slots are in range) lets numpy write straight into out
            pixels=np.take(self._pixels, slots, axis=0, out=out, mode="clip"),
            indices=indices,
            capture_times=self._capture_times[slots],
            media_times=self._media_times[slots],
        )
        if indices.size and indices.min() < self.oldest_readable():
            raise FramesGone(f"frame {indices.min()} was overwritten while being read")
        return frames

    def read_times(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(capture_times, media_times)`` of these frames, for picking frames by time."""
        indices = np.asarray(indices, np.int64)
        slots = indices % self.capacity
        times = self._capture_times[slots], self._media_times[slots]
        if indices.size and indices.min() < self.oldest_readable():
            raise FramesGone(f"frame {indices.min()} was overwritten while being read")
        return times

    def segment_start(self, index: int) -> int:
        """The first frame of the unbroken run that frame ``index`` belongs to, or `FramesGone`."""
        if not self.oldest_readable() <= index < self._head:
            raise FramesGone(f"frame {index} not in buffer [{self.oldest_readable()}, {self._head})")
        start = int(self._segment_starts[index % self.capacity])
        if index < self.oldest_readable():
            raise FramesGone(f"frame {index} was overwritten while being read")
        return start

    # Offline mode: the writer may not overwrite frames a reader still needs.

    def release(self, below: int) -> None:
        """Frames below ``below`` will not be read again; the writer may reuse their slots."""
        with self._changed:
            self._released = max(self._released, below)
            self._changed.notify_all()

    def wait_for_room(self, timeout: float) -> bool:
        """Block the writer until writing one more frame overwrites nothing still needed."""
        with self._changed:
            # After this write, frames from head - capacity + 2 on stay readable (see oldest_readable).
            return self._changed.wait_for(lambda: self._head - self.capacity + 2 <= self._released, timeout)

    def wait_for_frames(self, count: int, timeout: float) -> bool:
        """Block a reader until at least ``count`` frames have been written."""
        with self._changed:
            return self._changed.wait_for(lambda: self._head >= count, timeout)
