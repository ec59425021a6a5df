"""Every hop, take the newest clip of each stream and batch the clips of several streams.

Per stream, a `StreamSchedule` knows when the next view is due and which frames it takes
(PySlowFast's sampling, by index at the training frame rate, by timestamp otherwise). The
`Scheduler` gathers due views across streams, round-robin so that no stream starves, into
one batch for the engine, each view cut straight into its row of pooled batch arrays (one
copy of its frames, none to stack them). A partial batch waits (at most ``max_wait_ms``) only for streams
whose next view is expected within that time, so a lone view is not held back for nothing.

Back-pressure is built in: views are cut only when the engine takes a batch, so a stream
whose hops passed while the engine was busy gets one view of its newest frames, never a
queue of stale ones; the hops skipped are counted. Offline files are the exception: every
hop is served, and the capture thread waits for the frames to be released.

Live streams with the same hop are staggered: each one's first view is delayed by a few
frames so that cameras started together do not all fall due on the same frame. Without it,
N streams opened by one command ask for N clips at once every hop, and the last of them
waits for all the others' engine calls.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from streamrec.config import ClipConfig
from streamrec.ringbuffer import FramesGone, RingBuffer
from streamrec.sampling import fast_offsets, frames_for_duration, indices_by_time, slow_positions, split_pathways

FPS_TOLERANCE = 0.01  # within 1% of the training rate, frames are picked by index


@dataclass
class View:
    """One clip of one stream, ready for the engine."""

    stream_id: str
    inputs: dict[str, np.ndarray]  # per engine input name, uint8 [T, H, W, 3]
    end_index: int  # absolute index of the newest frame
    clip_start: float  # source seconds of the first and last frame
    clip_end: float
    newest_capture_time: float  # monotonic time the newest frame was read
    hops_skipped: int  # hops that passed without a view since the previous one


class StreamSchedule:
    def __init__(self, stream_id: str, ring: RingBuffer, clip: ClipConfig, fps: float, hop_frames: int,
                 offline: bool, live_clock: bool):
        self.stream_id = stream_id
        self.ring = ring
        self.clip = clip
        self.fps = fps
        self.hop = hop_frames
        self.offline = offline
        self.live_clock = live_clock  # sample by capture time (cameras) rather than source timestamps
        self.by_index = abs(fps - clip.train_fps) <= FPS_TOLERANCE * clip.train_fps
        # Frames one view spans: exact by index; by time, the frames covering the clip's seconds.
        self.window = clip.span if self.by_index else frames_for_duration(clip, fps) + 1
        self.window = min(self.window, ring.capacity - 1)
        self.phase = 0  # frames the first view waits beyond a full window (see `Scheduler.add`)
        self.next_end = self.window - 1  # the first view needs a full window
        self.origin: float | None = None  # live clock of the stream's first frame
        self.views = 0
        self.hops_skipped = 0

    def stagger(self, phase: int) -> None:
        """Delay the first view by ``phase`` frames (before it is taken)."""
        self.next_end += phase - self.phase
        self.phase = phase

    def due(self) -> bool:
        return self.ring.head - 1 >= self.next_end

    def expected_due_time(self) -> float:
        """When the next view should fall due (monotonic seconds), from the newest frame's capture
        time and the frame rate; in the past if the stream is late or stalled."""
        newest = self.ring.head - 1
        if newest < 0:
            return -math.inf
        try:
            capture_times, _ = self.ring.read_times(np.array([newest]))
        except FramesGone:  # a whole buffer was written since `head` was read: this thread is far behind
            return -math.inf
        return float(capture_times[0]) + (self.next_end - newest) / self.fps

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each engine input's shape for one view, ``[T, H, W, 3]``."""
        frames = (self.clip.num_frames, *self.ring.frame_shape)
        if not self.clip.alpha:
            return {"frames": frames}
        return {"slow": (len(slow_positions(self.clip)), *self.ring.frame_shape), "fast": frames}

    def take(self, out: dict[str, np.ndarray] | None = None) -> View | None:
        """Cut the view that is due (offline: exactly the next hop; live: the newest frames), into
        ``out``'s arrays (one per engine input, shaped as `input_shapes` says) if given."""
        newest = self.ring.head - 1
        if newest < self.next_end:
            return None
        end = self.next_end if self.offline else newest
        late = (end - self.next_end) // self.hop  # whole hops passed since this view fell due
        skipped = late
        try:
            view = self._cut(end, skipped, out)
        except FramesGone:  # overwritten while we cut it: the capture outran us; try the newest next time
            view = None
            skipped += 1
        # The next view is due on the stream's own grid of hops, not one hop after a late cut:
        # otherwise every late view would shift the stream's phase, and streams delayed together
        # would fall due together from then on, undoing the stagger.
        self.next_end += (late + 1) * self.hop
        self.hops_skipped += skipped
        if self.offline:
            self.ring.release(self.next_end - self.window + 1)
        return view

    def _cut(self, end: int, skipped: int, out: dict[str, np.ndarray] | None) -> View:
        start = end - self.window + 1
        if self.by_index:
            indices = start + fast_offsets(self.clip)
        else:
            candidates = np.arange(max(start, self.ring.oldest_readable()), end + 1)
            times = self._clock(candidates)
            indices = candidates[indices_by_time(self.clip, times, times[-1])]
        out = out or {}
        frames = self.ring.read(indices, out=out.get("fast" if self.clip.alpha else "frames"))
        times = frames.capture_times if self.live_clock else frames.media_times
        if self.origin is None:
            self.origin = times[0] if self.live_clock else 0.0
        self.views += 1
        return View(
            stream_id=self.stream_id,
            inputs=split_pathways(self.clip, frames.pixels, slow_out=out.get("slow")),
            end_index=end,
            clip_start=float(times[0] - self.origin),
            clip_end=float(times[-1] - self.origin),
            newest_capture_time=float(frames.capture_times[-1]),
            hops_skipped=skipped,
        )

    def _clock(self, indices: np.ndarray) -> np.ndarray:
        capture_times, media_times = self.ring.read_times(indices)
        return capture_times if self.live_clock else media_times


@dataclass
class Batch:
    """Views of several streams, cut into rows of pooled arrays: the engine's inputs as they are.
    Handed back with `Scheduler.release` once the engine is done with them."""

    views: list[View]
    inputs: dict[str, np.ndarray]  # per engine input, [len(views), T, H, W, 3]: the first rows of `arrays`
    arrays: dict[str, np.ndarray]  # the pooled arrays, [max_batch, T, H, W, 3]


class Scheduler:
    """Gathers due views across streams into batches for one shared engine."""

    def __init__(self, max_batch: int, max_wait_s: float):
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.schedules: list[StreamSchedule] = []
        self._next = 0  # round-robin start, so the first streams do not always win a full batch
        self._frames_arrived = threading.Event()
        # Batch arrays: the ones the next batch is being cut into, and released ones to reuse (fresh
        # arrays of this size cost more in page faults than the cut itself: 0.44 against 0.08 ms a
        # view for the tiny model, timed once on the dev machine).
        self._filling: dict[str, np.ndarray] | None = None
        self._spare: list[dict[str, np.ndarray]] = []

    def add(self, schedule: StreamSchedule) -> None:
        """Schedule a stream; a live one gets the phase fewest live streams of its hop have."""
        if not schedule.offline:
            peers = [s.phase for s in self.schedules if not s.offline and s.hop == schedule.hop]
            schedule.stagger(min(range(schedule.hop), key=peers.count))
        self.schedules.append(schedule)

    def remove(self, stream_id: str) -> None:
        self.schedules = [s for s in self.schedules if s.stream_id != stream_id]

    def notify(self) -> None:
        """Called by capture threads after each frame, and by the pipeline when an engine call ends."""
        self._frames_arrived.set()

    def views_due(self) -> int:
        """How many streams have a view due now."""
        return sum(schedule.due() for schedule in self.schedules)

    def full_batch_due(self) -> bool:
        """At least ``max_batch`` streams have a view due now."""
        return self.views_due() >= self.max_batch

    def next_batch(self, timeout: float, give_up: threading.Event | None = None,
                   max_views: int | None = None) -> Batch | None:
        """Up to ``max_batch`` views, or None if none became due within ``timeout``.

        Waiting, for a first view or for the batch to fill, ends early once ``give_up`` is set
        (and `notify` called): the pipeline's sign that an engine call ended and needs it.
        ``max_views`` caps the batch lower, and then it is not held to fill: the pipeline's share
        of what is due for one of several free engine slots, the others taking the views after.
        """
        cap = min(self.max_batch, max_views or self.max_batch)
        deadline = time.monotonic() + timeout
        views = self._collect([], cap)
        while not views and self._wait_until(deadline, give_up):
            views = self._collect(views, cap)
        fill_deadline = min(deadline, time.monotonic() + self.max_wait_s)
        while (views and max_views is None and len(views) < cap and self._coming(views, fill_deadline)
               and self._wait_until(fill_deadline, give_up)):
            views = self._collect(views, cap)
        if not views:
            return None
        arrays, self._filling = self._filling, None
        return Batch(views, {name: array[:len(views)] for name, array in arrays.items()}, arrays)

    def release(self, batch: Batch) -> None:
        """The engine is done with ``batch``: its arrays take the next batches' views."""
        self._spare.append(batch.arrays)

    def _wait_until(self, deadline: float, give_up: threading.Event | None) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or give_up is not None and give_up.is_set():
            return False
        self._frames_arrived.wait(remaining)
        self._frames_arrived.clear()
        return give_up is None or not give_up.is_set()

    def _coming(self, views: list[View], deadline: float) -> bool:
        """Some stream without a view in this batch should fall due by ``deadline`` (offline files
        always may: they are read as fast as the engine takes them, and are not latency-bound)."""
        taken = {v.stream_id for v in views}
        now = time.monotonic()
        return any(s.offline or now - 1.0 / s.fps <= s.expected_due_time() <= deadline
                   for s in self.schedules if s.stream_id not in taken)

    def _collect(self, views: list[View], cap: int) -> list[View]:
        taken = {v.stream_id for v in views}
        count = len(self.schedules)
        for offset in range(count):
            if len(views) >= cap:
                break
            schedule = self.schedules[(self._next + offset) % count]
            if schedule.stream_id in taken or not schedule.due():
                continue
            if self._filling is None:
                self._filling = self._arrays_for(schedule.input_shapes())
            view = schedule.take(out={name: array[len(views)] for name, array in self._filling.items()})
            if view is not None:
                views.append(view)
                taken.add(schedule.stream_id)
        if count:
            self._next = (self._next + 1) % count
        return views

    def _arrays_for(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        """Batch arrays for views of these shapes: released ones if there are, else new ones."""
        for index, arrays in enumerate(self._spare):
            if {name: array.shape[1:] for name, array in arrays.items()} == shapes:
                return self._spare.pop(index)
        return {name: np.empty((self.max_batch, *shape), np.uint8) for name, shape in shapes.items()}
