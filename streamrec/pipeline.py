"""The streaming pipeline: sources → capture threads → ring buffers → scheduler → engine →
postprocess → events.

One thread (the caller's) owns the scheduler and the event bus; capture threads only write
frames and report state changes through a queue, so every event is emitted, and numbered, in
one place. Engine calls run on worker threads so that host work overlaps them: when a call
ends, the next batch is cut (from the newest frames) and handed to the engine first, and the
finished batch's results are published while it runs. ``engine.parallel_calls`` batches (one
by default) are in the engine at a time; at saturation (a full batch due) one more waits in
the workers' queue, so the engine goes straight on without waiting for this thread. Results
are published in the order their batches were cut, whichever call ends first.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from streamrec.backends import Engine
from streamrec.capture import Capture, FrameTap, StreamState
from streamrec.config import Config, StreamConfig
from streamrec.errors import StreamrecError
from streamrec.events import EventBus
from streamrec.postprocess import ActionChange, ActionTracker
from streamrec.sampling import split_pathways
from streamrec.scheduler import Batch, Scheduler, StreamSchedule, View
from streamrec.sources import create_source, parse_source

log = logging.getLogger(__name__)
JOIN_TIMEOUT_S = 3.0  # shutdown never waits longer than this for a capture thread


@dataclass
class StreamRuntime:
    """Everything the pipeline holds for one stream."""

    config: StreamConfig
    capture: Capture
    display: str
    tracker: ActionTracker
    schedule: StreamSchedule | None = None  # once the source is open and its frame rate known
    ending: bool = False  # the source ended; serve what is left in the buffer, then close
    end_detail: str = ""  # why it ended, published once its last views are served
    closed: bool = False
    last_clip_end: float = 0.0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=1000))
    status_frames: int = 0  # frames_captured at the previous status event, for fps_in
    status_time: float = field(default_factory=time.monotonic)


@dataclass
class EngineCall:
    """A batch handed to the engine worker, and its logits to come."""

    batch: Batch
    logits: Future


# Called with (view, smoothed scores, tracker) after every hop; used by the annotated-video writer.
HopObserver = Callable[[View, np.ndarray, ActionTracker], None]


class Pipeline:
    def __init__(self, config: Config, engine: Engine, labels: list[str], bus: EventBus,
                 observers: list[HopObserver] = (), frame_taps: list[FrameTap] = ()):
        if not config.streams:
            raise StreamrecError("no stream to read; pass --source (a file, camera index, URL or 'synthetic')")
        self.config = config
        self.engine = engine
        self.labels = labels
        self.bus = bus
        self.observers = observers
        self.stop_event = threading.Event()
        pipe = config.pipeline
        self.scheduler = Scheduler(min(pipe.max_batch, engine.max_batch), pipe.max_wait_ms / 1000.0)
        self.parallel_calls = engine.parallel_calls
        self._engine_workers = ThreadPoolExecutor(max_workers=self.parallel_calls, thread_name_prefix="engine")
        # Oldest first: the calls in the engine, at most one queued behind them, and ended calls not yet published.
        self._in_flight: deque[EngineCall] = deque()
        self._call_ended = threading.Event()
        self._state_changes: queue.SimpleQueue = queue.SimpleQueue()
        self.streams: dict[str, StreamRuntime] = {}
        for stream in config.streams:
            spec = parse_source(stream.source)
            # A hung source is reported stalled after stall_timeout_s, and its read gives up (and the
            # source is reopened) at twice that, so the report always comes first.
            source = create_source(spec, open_timeout_s=config.reconnect.open_timeout_s,
                                   read_timeout_s=2 * pipe.stall_timeout_s)
            capture = Capture(stream.id, source, spec.display, config.clip, pipe, config.reconnect,
                              hop_frames=stream.hop_frames or pipe.hop_frames, region=stream.region,
                              on_frame=self.scheduler.notify,
                              on_state=self._on_state, frame_taps=frame_taps)
            postprocess = config.postprocess
            if stream.thresholds:
                postprocess = dataclasses.replace(postprocess, thresholds={**postprocess.thresholds, **stream.thresholds})
            self.streams[stream.id] = StreamRuntime(stream, capture, spec.display, ActionTracker(labels, postprocess))

    def _on_state(self, stream_id: str, state: StreamState, detail: str) -> None:
        self._state_changes.put((stream_id, state, detail))  # from capture threads; published by run()

    def stop(self) -> None:
        """Ask a running pipeline to finish (safe from signal handlers and other threads)."""
        self.stop_event.set()

    # ------------------------------------------------------------------ run

    def run(self) -> None:
        """Serve every stream until all have ended or `stop` is called; closes open actions."""
        try:
            self._start()
            self._serve()
        finally:
            self._shutdown()

    def _start(self) -> None:
        self._warm_up()
        for runtime in self.streams.values():
            runtime.capture.start()

    def _warm_up(self) -> None:
        """One inference on blank clips before the cameras start: lazy initialisation (and a
        broken engine) shows up here, not as a latency spike on the first real hop."""
        clip = self.config.clip
        self.engine.infer(split_pathways(clip, np.zeros((1, clip.num_frames, clip.crop_size, clip.crop_size, 3), np.uint8)))

    def _attach_opened_streams(self) -> None:
        """Schedule each stream once its source is open: only then are its frame rate and buffer known."""
        for runtime in self.streams.values():
            capture = runtime.capture
            if runtime.schedule is None and capture.ring is not None:
                hop = self._hop_frames(runtime.config, capture.fps)
                runtime.schedule = StreamSchedule(runtime.config.id, capture.ring, self.config.clip, capture.fps, hop,
                                                  offline=capture.offline, live_clock=capture.source.live)
                self.scheduler.add(runtime.schedule)

    def _hop_frames(self, stream: StreamConfig, fps: float) -> int:
        if stream.hop_frames:
            return stream.hop_frames
        if self.config.pipeline.hop_seconds:
            return max(1, round(self.config.pipeline.hop_seconds * fps))
        return self.config.pipeline.hop_frames

    def _serve(self) -> None:
        next_status = time.monotonic() + self.config.pipeline.status_interval_s
        while not self.stop_event.is_set():
            self._publish_state_changes()
            self._attach_opened_streams()
            self._detect_stalls()
            if time.monotonic() >= next_status:
                for runtime in self.streams.values():
                    if not runtime.ending:
                        self._emit_status(runtime, runtime.capture.state.value, "periodic")
                next_status = time.monotonic() + self.config.pipeline.status_interval_s
            if self._in_flight:
                self._next_call()
                continue
            batch = self._batch_for_a_free_slot(timeout=0.1)
            if batch:
                self._submit(batch)
            else:
                self._close_ended_streams()
                if all(r.closed for r in self.streams.values()):
                    self._raise_if_none_opened()
                    return

    def _submit(self, batch: Batch) -> None:
        """Hand a batch to the engine worker: it starts at once if the engine is free (this returns
        once it is under way), else it queues behind the call in the engine."""
        started = threading.Event()

        def call() -> np.ndarray:
            started.set()
            return self.engine.infer(batch.inputs)

        slot_free = self._unfinished_calls() < self.parallel_calls
        logits = self._engine_workers.submit(call)
        logits.add_done_callback(self._on_call_end)
        self._in_flight.append(EngineCall(batch, logits))
        if slot_free:
            # Hold back until the worker is in the engine: otherwise this thread's Python work (it
            # holds the GIL) would run first and delay the call instead of overlapping it.
            started.wait()

    def _on_call_end(self, _: Future) -> None:
        """On the worker thread: wake this pipeline's thread wherever it waits."""
        self._call_ended.set()
        self.scheduler.notify()

    def _unfinished_calls(self) -> int:
        return sum(not call.logits.done() for call in self._in_flight)

    def _next_call(self) -> None:
        """Wait for a call in flight to end (or, while the engine has a free slot, for views to fall
        due and start there), keep the engine fed, then publish the calls that ended, oldest first,
        while the next ones run."""
        self._call_ended.clear()  # before looking: a call that ends after this wakes the waits below
        unfinished = [call.logits for call in self._in_flight if not call.logits.done()]
        if len(unfinished) >= self.parallel_calls:
            wait(unfinished, return_when=FIRST_COMPLETED)
        elif unfinished:
            batch = self._batch_for_a_free_slot(timeout=0.1, give_up=self._call_ended)
            if batch:
                self._submit(batch)
        self._feed_engine()
        while self._in_flight and self._in_flight[0].logits.done():
            self._publish_results(self._in_flight.popleft())

    def _batch_for_a_free_slot(self, timeout: float, give_up: threading.Event | None = None) -> Batch | None:
        """The next batch for one free engine slot. With several slots free, what is due is shared
        out between them and not held back to fill a batch: two calls of one view each, side by
        side, end sooner than one call of both. (Stacking them put 5-15% of hops at half load in
        calls of two or three views, and those set the p99.)"""
        free = self.parallel_calls - self._unfinished_calls()
        if free < 2:
            return self.scheduler.next_batch(timeout, give_up)
        share = max(1, -(-self.scheduler.views_due() // free))  # rounded up
        return self.scheduler.next_batch(timeout, give_up, max_views=share)

    def _feed_engine(self) -> None:
        """Start a batch of what is due in each free engine slot; and while every slot is busy,
        queue a full batch behind them when one is due (saturation), so the engine goes straight on
        to it instead of waiting for this thread to wake up and cut the views."""
        while self._unfinished_calls() < self.parallel_calls:
            batch = self._batch_for_a_free_slot(timeout=0.0)
            if not batch:
                return
            self._submit(batch)
        if self._unfinished_calls() == self.parallel_calls and self.scheduler.full_batch_due():
            batch = self.scheduler.next_batch(timeout=0.0)
            if batch:
                self._submit(batch)

    def _publish_results(self, call: EngineCall) -> None:
        views = call.batch.views
        try:
            logits = call.logits.result()
        except Exception:
            ids = ", ".join(v.stream_id for v in views)
            log.exception("engine failed on a batch of %d views (streams %s); batch dropped", len(views), ids)
            return
        finally:
            self.scheduler.release(call.batch)  # the call is over: its arrays can take new views
        for view, row in zip(views, logits):
            runtime = self.streams[view.stream_id]
            changes = runtime.tracker.update(row, view.clip_end)
            runtime.last_clip_end = view.clip_end
            latency_ms = (time.monotonic() - view.newest_capture_time) * 1000.0
            runtime.latencies_ms.append(latency_ms)
            common = {"clip_start": round(view.clip_start, 3), "clip_end": round(view.clip_end, 3),
                      "latency_ms": round(latency_ms, 1)}
            for change in changes:
                self._emit_action(runtime, change, common)
            if self.config.events.predictions:
                self.bus.emit("prediction", view.stream_id, topk=runtime.tracker.top_k(), **common)
            for observer in self.observers:
                observer(view, runtime.tracker.scores, runtime.tracker)

    def _emit_action(self, runtime: StreamRuntime, change: ActionChange, common: dict) -> None:
        fields = {"label": change.label, "score": round(change.score, 4), "topk": runtime.tracker.top_k(), **common}
        if change.type == "action_end":
            fields["started_at"] = round(change.started_at, 3)
            fields["duration_s"] = round(common["clip_end"] - change.started_at, 3)
        self.bus.emit(change.type, runtime.config.id, **fields)

    # ------------------------------------------------------------------ stream state

    def _publish_state_changes(self) -> None:
        while True:
            try:
                stream_id, state, detail = self._state_changes.get_nowait()
            except queue.Empty:
                return
            runtime = self.streams[stream_id]
            if state is StreamState.ENDED:
                runtime.ending, runtime.end_detail = True, detail  # published by _close_stream
            else:
                self._emit_status(runtime, state.value, detail)

    def _detect_stalls(self) -> None:
        """A live source that stops delivering without closing is reported; its read timeout reopens it."""
        now = time.monotonic()
        for runtime in self.streams.values():
            capture = runtime.capture
            if (capture.state is StreamState.LIVE and capture.source.live
                    and now - capture.last_frame_time > self.config.pipeline.stall_timeout_s):
                capture.state = StreamState.STALLED
                self._emit_status(runtime, StreamState.STALLED.value,
                                  f"no frame for {now - capture.last_frame_time:.1f} s")

    def _raise_if_none_opened(self) -> None:
        """If no stream could be opened at all, the run failed: say why (one stream that cannot be
        opened among others that can is only reported, in its status events and the log)."""
        errors = [r.capture.open_error for r in self.streams.values()]
        if all(errors):
            raise StreamrecError("; ".join(errors))

    def _close_ended_streams(self) -> None:
        for runtime in self.streams.values():
            if runtime.ending and not runtime.closed and not (runtime.schedule and runtime.schedule.due()):
                self._close_stream(runtime)

    def _close_stream(self, runtime: StreamRuntime) -> None:
        runtime.closed = True
        if runtime.capture.open_error and any(r.schedule for r in self.streams.values()):
            log.error("%s; the other streams go on", runtime.capture.open_error)
        if runtime.schedule:
            self.scheduler.remove(runtime.config.id)
        common = {"clip_start": round(runtime.last_clip_end, 3), "clip_end": round(runtime.last_clip_end, 3),
                  "latency_ms": 0.0}
        for change in runtime.tracker.close():
            self._emit_action(runtime, change, common)
        self._emit_status(runtime, StreamState.ENDED.value, runtime.end_detail or "stopped")

    def _emit_status(self, runtime: StreamRuntime, state: str, detail: str) -> None:
        capture, now = runtime.capture, time.monotonic()
        elapsed = max(now - runtime.status_time, 1e-6)
        fps_in = (capture.frames_captured - runtime.status_frames) / elapsed
        runtime.status_frames, runtime.status_time = capture.frames_captured, now
        latencies = np.array(runtime.latencies_ms) if runtime.latencies_ms else None
        schedule = runtime.schedule
        self.bus.emit(
            "status", runtime.config.id,
            state=state, detail=detail, source=runtime.display,
            fps_in=round(fps_in, 2),
            frames_captured=capture.frames_captured, frames_dropped=capture.frames_dropped,
            hops_served=schedule.views if schedule else 0,
            hops_skipped=schedule.hops_skipped if schedule else 0,
            latency_ms_p50=round(float(np.percentile(latencies, 50)), 1) if latencies is not None else None,
            latency_ms_p99=round(float(np.percentile(latencies, 99)), 1) if latencies is not None else None,
        )

    # ------------------------------------------------------------------ shutdown

    def _shutdown(self) -> None:
        while self._in_flight:  # their views were cut: their events are owed
            self._publish_results(self._in_flight.popleft())
        self._engine_workers.shutdown()
        for runtime in self.streams.values():
            runtime.capture.stop()
        for runtime in self.streams.values():
            if runtime.capture.is_alive():
                runtime.capture.join(JOIN_TIMEOUT_S)
        self._publish_state_changes()
        for runtime in self.streams.values():
            if not runtime.closed:
                self._close_stream(runtime)
