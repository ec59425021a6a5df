"""One capture thread per stream: read, stamp, convert, resize, store in the ring buffer.

The thread never waits for inference on a live source: a slow engine means older frames are
overwritten, not that the camera stalls. Offline files are the exception by design: every
frame is processed, so the thread waits for room in the buffer and results are deterministic.
Drops of reconnectable sources are reopened with exponential backoff, and so are sources that
stop delivering a steady run of frames (a frozen camera whose decoder still hands out a stray
frame now and then): after twice ``pipeline.stall_timeout_s`` without one, the source is closed
and reopened. Every reopen, and every gap longer than ``pipeline.max_gap_frames`` frame
intervals on the stream's clock, starts a new segment in the ring buffer: no clip spans it.

A capture thread talks to the pipeline in one direction only: it reports through a queue
(`Opened` once its buffer exists, then every `StateChange`) and signals ``frame_written``
after each frame; it never reads or writes the pipeline's state. Whether a live stream has
stalled is the pipeline's judgement, not the capture's.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np

from streamrec.config import ClipConfig, PipelineConfig, ReconnectConfig
from streamrec.redaction import redact
from streamrec.ringbuffer import RingBuffer
from streamrec.sampling import frames_for_duration, hop_frames
from streamrec.sources import FrameSource, SourceUnavailable
from streamrec.transforms import crop_region, fit_clip_frame

log = logging.getLogger(__name__)
STEADY_RUN = 3  # frames in a row, each within stall_timeout_s of the one before: the source is flowing


class StreamState(str, enum.Enum):
    CONNECTING = "connecting"
    LIVE = "live"
    STALLED = "stalled"  # set by the pipeline only: live, but no frame for stall_timeout_s
    RECONNECTING = "reconnecting"
    ENDED = "ended"


@dataclass(frozen=True)
class Opened:
    """The source opened for the first time: its frame rate, and the buffer its frames go to."""

    stream_id: str
    fps: float
    ring: RingBuffer


@dataclass(frozen=True)
class StateChange:
    stream_id: str
    state: StreamState
    detail: str
    open_error: str | None = None  # with ENDED, when the stream could never be opened: why
    failure: str | None = None  # with ENDED, when the capture thread stopped on an internal error: what


CaptureReport = Union[Opened, StateChange]
# Sees every source-resolution RGB frame as read: (stream id, frame index, media time, frame).
# Must return at once (hand the frame to another thread or drop it): it runs on the capture thread.
FrameTap = Callable[[str, int, float, np.ndarray], None]


class Capture(threading.Thread):
    def __init__(self, stream_id: str, source: FrameSource, display: str, clip: ClipConfig,
                 pipeline: PipelineConfig, reconnect: ReconnectConfig, stream_hop_frames: int | None,
                 region: tuple[float, float, float, float] | None, reports: queue.SimpleQueue,
                 frame_written: Callable[[], None], frame_taps: list[FrameTap] = ()):
        super().__init__(name=f"capture-{stream_id}", daemon=True)
        self.stream_id = stream_id
        self.source = source
        self.display = display  # credentials redacted
        self.clip = clip
        self.pipeline = pipeline
        self.reconnect = reconnect
        self.stream_hop_frames = stream_hop_frames
        self.region = region
        self.reports = reports
        self.frame_written = frame_written
        self.frame_taps = frame_taps
        self.stop_event = threading.Event()
        self.fps = pipeline.assumed_fps  # the source's, once it has opened
        self._state = StreamState.CONNECTING  # as last reported
        # Counters, written by this thread only; read by the pipeline for its figures.
        self.frames_captured = 0
        self.frames_dropped = 0  # realtime file playback skipped these to keep pace
        self.last_frame_time = time.monotonic()  # of the newest frame, or of the latest (re)open
        self.last_steady_time = self.last_frame_time  # of the newest frame of a steady run, or of the latest (re)open
        self._run = 0  # frames in a row that came within stall_timeout_s of the one before
        self._new_segment = True  # the next frame follows an open: nothing before it joins it in a clip
        self._previous: tuple[float, float] | None = None  # (arrival, stream clock) of the previous frame
        self.source_size: tuple[int, int] | None = None  # (width, height) of the latest frame

    @property
    def offline(self) -> bool:
        """Frames are read as fast as the pipeline takes them, never dropped: a file (or a file
        served over HTTP, known once it has opened) outside real time."""
        return not self.source.live and not self.pipeline.realtime

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        try:
            self._set_state(StreamState.CONNECTING, self.display)
            if not self._open_with_backoff(first=True):
                return
            self._capture_loop(self._create_ring())
        except Exception as exc:  # a bug or an unexpected decoder failure must not kill the process
            failure = redact(f"{type(exc).__name__}: {exc}")
            log.error("capture thread of stream %s failed: %s", self.stream_id, failure)
            log.debug("where it failed", exc_info=True)
            self._state = StreamState.ENDED
            self.reports.put(StateChange(self.stream_id, StreamState.ENDED, f"error: {failure}", failure=failure))
        finally:
            self.source.close()
            if self._state is not StreamState.ENDED:
                self._set_state(StreamState.ENDED, "stopped")

    # ------------------------------------------------------------------ internals

    def _set_state(self, state: StreamState, detail: str = "", open_error: str | None = None) -> None:
        self._state = state
        self.reports.put(StateChange(self.stream_id, state, detail, open_error))

    def _open_with_backoff(self, first: bool = False) -> bool:
        """Open the source, retrying with exponential backoff where it can come back."""
        delay = self.reconnect.initial_delay_s
        failures = 0
        while not self.stop_event.is_set():
            try:
                self.source.open()
                self.last_frame_time = self.last_steady_time = time.monotonic()
                self._run, self._new_segment = 0, True
                return True
            except SourceUnavailable as exc:
                failures += 1
                retries_left = self.reconnect.max_retries < 0 or failures <= self.reconnect.max_retries
                if not self.source.reconnectable or not retries_left or (first and exc.permanent):
                    attempts = f" after {failures} attempts" if failures > 1 else ""
                    never_opened = f"stream {self.stream_id}: {exc}{attempts}" if first else None
                    self._set_state(StreamState.ENDED, f"unavailable: {exc}", never_opened)
                    return False
                log.warning("stream %s: %s; retrying in %.1f s", self.stream_id, exc, delay)
                self._set_state(StreamState.RECONNECTING, f"retry in {delay:.1f} s: {exc}")
                self.stop_event.wait(delay)
                delay = min(delay * self.reconnect.multiplier, self.reconnect.max_delay_s)
        return False

    def _create_ring(self) -> RingBuffer:
        """Size the buffer once, from the first open's frame rate: clip span + hop + slack."""
        self.fps = self.source.fps or self.pipeline.assumed_fps
        hop = hop_frames(self.pipeline, self.fps, self.stream_hop_frames)
        capacity = frames_for_duration(self.clip, self.fps) + hop + self.pipeline.buffer_slack
        ring = RingBuffer(capacity, self.clip.crop_size, self.clip.crop_size)
        log.info("stream %s: %s at %.1f fps, ring buffer %d frames (%.1f MiB)", self.stream_id, self.display,
                 self.fps, capacity, ring.nbytes / 2**20)
        self.reports.put(Opened(self.stream_id, self.fps, ring))
        return ring

    def _capture_loop(self, ring: RingBuffer) -> None:
        paced = not self.source.live and self.pipeline.realtime
        first_timestamp: float | None = None
        wall_start = time.monotonic()
        self._set_state(StreamState.LIVE, self.display)
        give_up_s = 2 * self.pipeline.stall_timeout_s
        while not self.stop_event.is_set():
            if self.offline and not ring.wait_for_room(timeout=0.1):
                continue
            item = self.source.read()
            now = time.monotonic()
            if item is None and not self.source.reconnectable:
                early = self.source.ended_early
                if early:
                    log.warning("stream %s ended early: %s", self.stream_id, early)
                self._set_state(StreamState.ENDED, f"end of stream: {early}" if early else "end of stream")
                return
            if item is None or (self.source.reconnectable and now - self.last_steady_time > give_up_s):
                why = "source dropped" if item is None else f"no steady frames for {now - self.last_steady_time:.1f} s"
                if not self._reopen(why):
                    return
                continue
            frame, timestamp = item
            if timestamp is None:
                timestamp = now - wall_start if self.source.live else self.frames_captured / self.fps
            if paced:
                first_timestamp = timestamp if first_timestamp is None else first_timestamp
                due = wall_start + (timestamp - first_timestamp)
                if now > due + 1.0 / self.fps:  # behind the file's clock: drop, like a camera would
                    self.frames_dropped += 1
                    continue
                self.stop_event.wait(max(0.0, due - now))
            size = (frame.shape[1], frame.shape[0])
            if self.source_size and size != self.source_size:
                self._set_state(StreamState.LIVE, "resolution changed from {}x{} to {}x{}".format(*self.source_size, *size))
            self.source_size = size
            seen = crop_region(frame, self.region) if self.region else frame
            new_segment = self._follows_a_break(now, now if self.source.live else timestamp)
            index = ring.write(fit_clip_frame(seen, self.clip), now, timestamp, new_segment)
            for tap in self.frame_taps:
                tap(self.stream_id, index, timestamp, frame)
            self.frames_captured += 1
            self.last_frame_time = now
            self.frame_written()

    def _follows_a_break(self, arrival: float, clock: float) -> bool:
        """Note a frame's arrival (for steadiness) and say whether it starts a new segment: the
        first after an open, or more than ``max_gap_frames`` intervals after the previous one on
        the stream's clock (capture time for live sources, the file's timestamps otherwise)."""
        previous, self._previous = self._previous, (arrival, clock)
        steady_gap = previous is not None and arrival - previous[0] <= self.pipeline.stall_timeout_s
        self._run = self._run + 1 if steady_gap else 1
        if self._run >= STEADY_RUN:
            self.last_steady_time = arrival
        broken = self._new_segment or clock - previous[1] > self.pipeline.max_gap_frames / self.fps
        self._new_segment = False
        return broken

    def _reopen(self, why: str) -> bool:
        """Close the source and open it again with backoff; False if it is given up."""
        self.source.close()
        self._set_state(StreamState.RECONNECTING, why)
        if not self._open_with_backoff():
            return False
        self._set_state(StreamState.LIVE, self.display)
        return True
