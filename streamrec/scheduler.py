"""Every hop, take the newest clip of each stream and batch the clips of several streams.

Per stream, a `StreamSchedule` knows when the next view is due and which frames it takes
(`sampling.clip_indices`: PySlowFast's sampling, by index at the training frame rate, by
timestamp otherwise). The `Scheduler` says how many views are due and cuts them, round-robin
so that no stream starves, each view straight into its row of pooled batch arrays (one copy
of its frames, none to stack them).

The scheduler never waits and owns no thread: it answers questions about the buffers at the
moment it is asked, with an injected clock. When to ask, and how long a partial batch may be
held for more views (`fill_deadline`), is decided by the one caller that waits, the engine
dispatcher.

A clip never spans a break in its stream: where the capture marked a new segment (a reopen,
or frames missing for longer than ``pipeline.max_gap_frames``), the schedule starts again
after it, refills a whole window before its next view, and marks that view as following a
gap so that the pipeline can end what was open before it.

Back-pressure is built in: views are cut only when the engine takes a batch, so a stream
whose hops passed while the engine was busy gets one view of its newest frames, never a
queue of stale ones; the hops skipped are counted. Offline files are the exception: every
hop is served, and the capture thread waits for the frames to be released.

A streaming model's stream (`StepSchedule`) is cut differently: each view is only one hop's
new frames on the model's unit grid, restarted at every break; the state the model carries
from one view to the next lives in the pipeline, so such a stream has one view in flight at a
time, a late stream is fed the hops it missed while their frames last, and a view that does not
follow on from the previous one says so (`View.restarts`).

Live streams with the same hop are staggered: each one's first view is delayed by a few
frames so that cameras started together do not all fall due on the same frame. Without it,
N streams opened by one command ask for N clips at once every hop, and the last of them
waits for all the others' engine calls.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from streamrec.config import ClipConfig
from streamrec.ringbuffer import FramesGone, RingBuffer
from streamrec.sampling import (
    by_index,
    clip_indices,
    clip_window,
    hop_indices,
    hop_offsets,
    slow_positions,
    split_hop_pathways,
    split_pathways,
)

Clock = Callable[[], float]  # monotonic seconds, the clock capture times are stamped with


@dataclass(frozen=True)
class Gap:
    """A break in a stream (a reopen, or frames missing) that the view after it follows."""

    last_frame_at: float | None  # clip time of the last frame before it; None if no longer readable


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
    follows_gap: Gap | None = None  # the stream broke off after the previous view and before this one
    # A streaming view whose frames do not follow on from the previous view's (the stream's first,
    # the first after a break or after skipped hops): the model's carried state starts from zeros.
    restarts: bool = False


class StreamSchedule:
    """When one stream's next view is due, and cutting it from the stream's ring buffer."""

    def __init__(self, stream_id: str, ring: RingBuffer, clip: ClipConfig, fps: float, hop_frames: int,
                 offline: bool, live_clock: bool):
        self.stream_id = stream_id
        self.ring = ring
        self.clip = clip
        self.fps = fps
        self.hop = hop_frames
        self.offline = offline
        self.live_clock = live_clock  # sample by capture time (cameras) rather than source timestamps
        self.window = min(clip_window(clip, fps), ring.capacity - 1)  # source frames one view spans
        self.phase = 0  # frames the first view waits beyond a full window (see `Scheduler.add`)
        self.first_end = self.window - 1  # the first view (of this segment) needs a full window
        self.next_end = self.first_end
        self.origin: float | None = None  # clock of the stream's first frame, for clip times
        self.views = 0
        self.hops_skipped = 0
        self.gaps = 0  # breaks in the stream a clip would have spanned
        self._hops_due_before = 0  # hops asked for in earlier segments
        self._gap: Gap | None = None  # a break since the last view, for the next view to carry
        self.awaiting_result = False  # `StepSchedule`: its view in flight returns the state the next one needs

    def stagger(self, phase: int) -> None:
        """Delay the first view by ``phase`` frames (before it is taken)."""
        self.next_end += phase - self.phase
        self.first_end += phase - self.phase
        self.phase = phase

    def due(self) -> bool:
        return self.ring.head - 1 >= self.next_end

    def hops_due(self, frames: int) -> int:
        """Views this stream asked for by its ``frames``-th frame: one when the first full window of
        each segment (and the stagger) arrived, then one every hop. Counted from frames, not from
        skips: a view cut a few frames late shifts nothing on the grid, so skips alone understate
        what was missed."""
        newest = frames - 1
        if newest < self.first_end:
            return self._hops_due_before
        return self._hops_due_before + (newest - self.first_end) // self.hop + 1

    def expected_due_time(self) -> float:
        """When the next view should fall due (monotonic seconds), from the newest frame's capture
        time and the frame rate; in the past if the stream is late or stalled."""
        newest = self.ring.head - 1
        if newest < 0:
            return -math.inf
        try:
            capture_times, _ = self.ring.read_times(np.array([newest]))
        except FramesGone:  # a whole buffer was written since `head` was read: the reader is far behind
            return -math.inf
        return float(capture_times[0]) + (self.next_end - newest) / self.fps

    def clip_time(self, index: int) -> float | None:
        """Frame ``index``'s time on this stream's clip clock (as views' ``clip_end``); None before
        the first view, or if the frame is gone."""
        if self.origin is None or index < 0:
            return None
        try:
            return float(self._clock(np.array([index]))[0] - self.origin)
        except FramesGone:
            return None

    def clip_time_of_newest(self) -> float | None:
        return self.clip_time(self.ring.head - 1)

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
        try:
            segment = self.ring.segment_start(end)
        except FramesGone:
            segment = -1  # overwritten already: the cut below fails the same way, and counts it
        if segment > end - self.window + 1:  # the clip would span a break in the stream
            self._restart(segment)
            return None
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

    def _restart(self, segment: int) -> None:
        """The stream broke off before frame ``segment``: start again after it."""
        self._hops_due_before = self.hops_due(segment)
        self._start_segment(segment)
        self.gaps += 1
        if self.origin is not None:  # a view was cut before the break
            self._gap = Gap(self.clip_time(segment - 1))
        if self.offline:
            self.ring.release(segment)

    def _start_segment(self, segment: int) -> None:
        """Where the views of a segment that starts at frame ``segment`` fall due: a full window on."""
        self.first_end = self.next_end = segment + self.window - 1

    def _cut(self, end: int, skipped: int, out: dict[str, np.ndarray] | None) -> View:
        indices = clip_indices(self.clip, self.fps, end, end - self.window + 1, self._clock)
        out = out or {}
        frames = self.ring.read(indices, out=out.get("fast" if self.clip.alpha else "frames"))
        return self._view(frames, end, skipped, split_pathways(self.clip, frames.pixels, slow_out=out.get("slow")),
                          float(frames.capture_times[-1]))

    def _view(self, frames, end: int, skipped: int, inputs: dict[str, np.ndarray], newest_capture_time: float,
              **fields) -> View:
        """The view of ``frames`` (read from the ring buffer) ending at frame ``end``, on the stream's
        clock, carrying the break since the last view if there was one."""
        times = frames.capture_times if self.live_clock else frames.media_times
        if self.origin is None:
            self.origin = times[0] if self.live_clock else 0.0
        self.views += 1
        gap, self._gap = self._gap, None
        return View(
            stream_id=self.stream_id,
            inputs=inputs,
            end_index=end,
            clip_start=float(times[0] - self.origin),
            clip_end=float(times[-1] - self.origin),
            newest_capture_time=newest_capture_time,
            hops_skipped=skipped,
            follows_gap=gap,
            **fields,
        )

    def _clock(self, indices: np.ndarray) -> np.ndarray:
        capture_times, media_times = self.ring.read_times(indices)
        return capture_times if self.live_clock else media_times


class StepSchedule(StreamSchedule):
    """A streaming model's stream (docs/streaming.md): each view is one hop's new frames on the
    model's unit grid, not a whole clip. ``step_hop`` is the hop in source frames at the training
    rate (a whole number of units); its Fast frames are every ``sampling_rate``-th of them, Slow
    the first of each unit (`sampling.hop_indices`: by index at the training rate, else the
    latest frame at or before each wanted time). The grid starts at the stream's first frame (and
    the stagger) and again after every break. A stream that fell behind is not handed its newest
    frames, as a clip stream is: its next hop follows on from the last one while that hop's
    frames are still in the ring buffer (missing a hop costs the model a whole warm-up); only
    once they are overwritten does it go on from the newest whole hop, marked `View.restarts`."""

    def __init__(self, stream_id: str, ring: RingBuffer, clip: ClipConfig, fps: float, step_hop: int,
                 offline: bool, live_clock: bool):
        exact = by_index(clip, fps)
        source_hop = step_hop if exact else max(1, round(step_hop * fps / clip.train_fps))
        super().__init__(stream_id, ring, clip, fps, source_hop, offline, live_clock)
        self.step_hop = step_hop
        self.exact = exact
        # by timestamp a hop's first wanted time may fall on the frame before its own frames
        self.window = min(source_hop + (0 if exact else 1 + math.ceil(fps / clip.train_fps)), ring.capacity - 1)
        self.grid = 0  # the grid's first frame: the segment's first (and the stagger)
        self.grid_time: float | None = None  # its time on the stream's clock, once read
        self.grid_hops = 0  # hops of this grid cut or passed
        self._restarts = True  # the next view starts the model's state from zeros
        self._start_segment(0)

    def _end_of(self, hop: int) -> int:
        """The last source frame of the grid's ``hop``-th hop (0-based)."""
        if self.exact:
            return self.grid + (hop + 1) * self.step_hop - 1
        return self.grid + math.ceil((hop + 1) * self.step_hop * self.fps / self.clip.train_fps) - 1

    def stagger(self, phase: int) -> None:
        self.grid += phase - self.phase
        super().stagger(phase)

    def due(self) -> bool:
        return not self.awaiting_result and super().due()

    def hops_due(self, frames: int) -> int:
        """Hops of the unit grid whose last frame is among the first ``frames`` (`_end_of`: by
        timestamp a hop is a fractional number of source frames, which ``self.hop`` rounds)."""
        newest = frames - 1
        if newest < self.first_end:
            return self._hops_due_before
        hops = int((newest - self.grid + 1) * self.clip.train_fps / (self.step_hop * self.fps))
        while self._end_of(hops) <= newest:  # the estimate exact, whatever the float rounding
            hops += 1
        while hops > 0 and self._end_of(hops - 1) > newest:
            hops -= 1
        return self._hops_due_before + hops

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        fast = len(hop_offsets(self.clip, self.step_hop))
        if not self.clip.alpha:
            return {"frames": (fast, *self.ring.frame_shape)}
        return {"slow": (fast // self.clip.alpha, *self.ring.frame_shape), "fast": (fast, *self.ring.frame_shape)}

    def take(self, out: dict[str, np.ndarray] | None = None) -> View | None:
        """Cut the next hop on the grid into ``out`` (live, if its frames are gone: the newest whole hop)."""
        newest = self.ring.head - 1
        if newest < self.next_end:
            return None
        late = 0
        if not self.offline and max(self.grid, self.next_end - self.window + 1) < self.ring.oldest_readable():
            late = max(1, (newest - self.next_end) // self.hop)
            while late > 1 and self._end_of(self.grid_hops + late) > newest:  # by timestamp hops differ by a frame
                late -= 1
        hop = self.grid_hops + late
        end = self._end_of(hop)
        try:
            segment = self.ring.segment_start(end)
        except FramesGone:
            segment = -1  # overwritten already: the cut below fails the same way, and counts it
        if segment > self.grid:  # the stream broke off since this grid began
            self._restart(segment)
            return None
        skipped = late
        try:
            view = self._cut_hop(hop, end, skipped, out)
        except FramesGone:
            view = None
            skipped += 1
        if view is None:
            self._restarts = True  # the model never sees this hop: the next view cannot follow on from it
        else:
            self.awaiting_result = True
        self.grid_hops = hop + 1
        self.next_end = self._end_of(self.grid_hops)
        self.hops_skipped += skipped
        if self.offline:
            self.ring.release(self.next_end - self.window + 1)
        return view

    def _start_segment(self, segment: int) -> None:
        """A new grid from frame ``segment``, and the model's state from zeros."""
        self.grid, self.grid_time, self.grid_hops = segment, None, 0
        self.first_end = self.next_end = self._end_of(0)
        self._restarts = True

    def _cut_hop(self, hop: int, end: int, skipped: int, out: dict[str, np.ndarray] | None) -> View:
        if self.grid_time is None:
            self.grid_time = float(self._clock(np.array([self.grid]))[0])
        start_time = self.grid_time + hop * self.step_hop / self.clip.train_fps
        indices = hop_indices(self.clip, self.fps, self.step_hop, self.grid + hop * self.step_hop, start_time,
                              max(self.grid, end - self.window + 1), end, self._clock)
        out = out or {}
        frames = self.ring.read(indices, out=out.get("fast" if self.clip.alpha else "frames"))
        newest_capture, _ = self.ring.read_times(np.array([end]))  # the frame that made the hop due
        restarts, self._restarts = self._restarts or skipped > 0, False
        return self._view(frames, end, skipped, split_hop_pathways(self.clip, frames.pixels, slow_out=out.get("slow")),
                          float(newest_capture[0]), restarts=restarts)


@dataclass
class Batch:
    """Views of several streams, cut into rows of pooled arrays: the engine's inputs as they are.
    Handed back with `Scheduler.release` once the engine is done with them."""

    views: list[View]
    inputs: dict[str, np.ndarray]  # per engine input, [len(views), T, H, W, 3]: the first rows of `arrays`
    arrays: dict[str, np.ndarray]  # the pooled arrays, [max_batch, T, H, W, 3]


class Scheduler:
    """What is due across streams, and cutting it into batches for one shared engine.

    Non-blocking: `due`, `fill_deadline` and `cut` look at the ring buffers as they are now.
    Called from one thread (the dispatcher's caller); capture threads only write the buffers.
    """

    def __init__(self, max_batch: int, max_wait_s: float, clock: Clock = time.monotonic):
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.schedules: list[StreamSchedule] = []
        self._next = 0  # round-robin start, so the first streams do not always win a full batch
        self._held_since: float | None = None  # when views due were first held back to fill a batch
        # Released batch arrays, reused: fresh arrays of this size cost more in page faults than the cut.
        self._spare: list[dict[str, np.ndarray]] = []

    def add(self, schedule: StreamSchedule) -> None:
        """Schedule a stream; a live one gets the phase fewest live streams of its hop have."""
        if not schedule.offline:
            peers = [s.phase for s in self.schedules if not s.offline and s.hop == schedule.hop]
            schedule.stagger(min(range(schedule.hop), key=peers.count))
        self.schedules.append(schedule)

    def remove(self, stream_id: str) -> None:
        self.schedules = [s for s in self.schedules if s.stream_id != stream_id]

    def due(self) -> int:
        """How many streams have a view due now."""
        return sum(schedule.due() for schedule in self.schedules)

    def fill_deadline(self, now: float | None = None) -> float | None:
        """Until when the views due now are worth holding back for more streams' views, for a
        fuller batch; None when they should be cut now.

        They are held at most ``max_wait_s`` from the first time they were found due (and held),
        and only while some stream without a due view is expected to fall due by then (an
        offline file always may: it is read as fast as the engine takes it). Cutting resets it.
        """
        now = self.clock() if now is None else now
        due = self.due()
        if due == 0:
            self._held_since = None
            return None
        if self._held_since is None:
            self._held_since = now
        deadline = self._held_since + self.max_wait_s
        if due >= self.max_batch or now >= deadline or not self._coming(deadline, now):
            return None
        return deadline

    def cut(self, max_views: int | None = None) -> Batch | None:
        """Up to ``max_views`` (at most ``max_batch``) of the views due now, round-robin across
        streams, cut into pooled batch arrays; None when none is due."""
        cap = min(self.max_batch, max_views or self.max_batch)
        self._held_since = None
        views: list[View] = []
        arrays: dict[str, np.ndarray] | None = None
        count = len(self.schedules)
        for offset in range(count):
            if len(views) >= cap:
                break
            schedule = self.schedules[(self._next + offset) % count]
            if not schedule.due():
                continue
            if arrays is None:
                arrays = self._arrays_for(schedule.input_shapes())
            view = schedule.take(out={name: array[len(views)] for name, array in arrays.items()})
            if view is not None:
                views.append(view)
        if count:
            self._next = (self._next + 1) % count
        if not views:
            if arrays is not None:
                self._spare.append(arrays)
            return None
        return Batch(views, {name: array[:len(views)] for name, array in arrays.items()}, arrays)

    def release(self, batch: Batch) -> None:
        """The engine is done with ``batch``: its arrays take the next batches' views, and its
        streams' next views may go (a streaming stream's needs the state this call returned)."""
        self._spare.append(batch.arrays)
        streams = {view.stream_id for view in batch.views}
        for schedule in self.schedules:
            if schedule.stream_id in streams:
                schedule.awaiting_result = False

    def _coming(self, deadline: float, now: float) -> bool:
        """Some stream without a view due now should fall due by ``deadline``."""
        return any(s.offline or now - 1.0 / s.fps <= s.expected_due_time() <= deadline
                   for s in self.schedules if not s.due())

    def _arrays_for(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        """Batch arrays for views of these shapes: released ones if there are, else new ones."""
        for index, arrays in enumerate(self._spare):
            if {name: array.shape[1:] for name, array in arrays.items()} == shapes:
                return self._spare.pop(index)
        return {name: np.empty((self.max_batch, *shape), np.uint8) for name, shape in shapes.items()}
