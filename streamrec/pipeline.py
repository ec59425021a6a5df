"""The streaming pipeline: sources → capture threads → ring buffers → scheduler → engine →
postprocess → events.

Control runs one way. Capture threads write frames into their ring buffers and report what
happens to them (opened, state changes) through one queue. The `Scheduler` says what is due
and cuts it; the `EngineDispatcher` owns the engine's slots and every wait. This thread (the
caller's) runs the loop below, as PySlowFast's demo loop puts tasks and gets results: take
the captures' reports, watch the streams, get the engine calls that ended (the dispatcher
keeps the engine fed meanwhile) and publish their results. It alone owns the per-stream
state and the event bus, so every event is emitted, and numbered, in one place.

What a running pipeline has done is read from `Pipeline.stats`: status events, the Prometheus
collector and the benchmarks all render those figures.

With a streaming config (``streaming:``, docs/streaming.md) the engine runs the model's
streaming form: each view is one hop's new frames (`streamrec.scheduler.StepSchedule`), and
each stream's carried state is a row in its `StreamRuntime`, gathered into the engine call's
``state`` and scattered back from its ``new_state`` by the call itself (`Pipeline._step`). A
stream's state starts from zeros at its first view and at every view that does not follow on
from the previous one; its views publish nothing until the state holds ``warmup_units`` units,
and their events' ``clip_start``/``clip_end`` are the window the logits describe, which ends
``delay_units`` units before the hop's last frame.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from streamrec.backends import Engine
from streamrec.capture import Capture, CaptureReport, FrameTap, Opened, StreamState
from streamrec.config import Config, StreamConfig, streaming_hop_frames
from streamrec.dispatcher import EngineCall, EngineDispatcher
from streamrec.errors import StreamrecError
from streamrec.events import EventBus
from streamrec.backends.inputs import MAX_BOXES_PER_CLIP, StreamingSpec, hop_input_specs
from streamrec.detection import PersonDetector, create_detector
from streamrec.detection.tracker import Track
from streamrec.persons import PersonChange, PersonRows, PersonStage, SourceGeometry, StreamPeople
from streamrec.postprocess import ActionChange, ActionThresholds, ActionTracker
from streamrec.sampling import hop_frames, split_pathways
from streamrec.scheduler import Batch, Scheduler, StepSchedule, StreamSchedule, View
from streamrec.sources import create_source, parse_source

log = logging.getLogger(__name__)
JOIN_TIMEOUT_S = 3.0  # shutdown never waits longer than this for a capture thread
LOOK_AROUND_S = 0.1  # the loop looks at reports, stalls and status at least this often
LATENCY_WINDOW = 1000  # hops the latency percentiles are taken over


@dataclass(frozen=True)
class StreamStats:
    """One stream's running figures, as of the moment `Pipeline.stats` was called."""

    stream: str
    source: str  # as shown to users: credentials masked
    state: str  # a `StreamState` value
    source_fps: float  # the source's frame rate (assumed until it has opened)
    offline: bool  # a file read as fast as the engine takes it: every hop served
    frames_captured: int
    frames_dropped: int  # realtime file playback skipped these to keep pace
    last_frame_time: float  # monotonic time of the newest frame (or of the latest open)
    hops_due: int  # views the stream asked for (see `StreamSchedule.hops_due`)
    hops_served: int  # views classified
    hops_skipped: int  # hops that passed while the engine was busy
    latency_ms_p50: float | None  # capture of a clip's newest frame to its results, recent hops
    latency_ms_p99: float | None
    error: str | None  # why the stream failed: it could never be opened, or its capture stopped on an error
    # Streaming configs only (None otherwise): times the model's state started again from zeros after
    # the stream's first view (a gap, a reopen, a hop lost, a failed call), each costing a warm-up;
    # and whether it is in one now (its views publish nothing until the state holds warmup_units).
    state_restarts: int | None = None
    warming_up: bool | None = None


@dataclass(frozen=True)
class HopResult:
    """What one hop of one stream gave: for hop observers (annotated video, timeline, evaluation)."""

    view: View
    probabilities: np.ndarray  # this hop's softmax
    scores: np.ndarray  # smoothed over the last hops: what thresholds and top-k apply to
    changes: tuple[ActionChange, ...]  # actions started or ended at this hop
    top_k: list[list]  # [[label, score], ...] of the smoothed scores, best first
    active: dict[str, float]  # open actions after this hop: label -> start (source seconds)
    thresholds: ActionThresholds
    people: tuple[PersonView, ...] | None = None  # per-person mode: everyone seen at this hop


@dataclass(frozen=True)
class PersonView:
    """One person seen at a hop, for hop observers."""

    track_id: int
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the source frame's pixels
    top_k: list[list]  # their smoothed top labels
    active: dict[str, float]  # their open actions: label -> start (source seconds)


HopObserver = Callable[[HopResult], None]


@dataclass
class StreamRuntime:
    """Everything the pipeline holds for one stream; written by the pipeline's thread, but for a
    streaming stream's carried state (``carried``, ``units_carried``, ``state_starts``), written
    by the engine call that has the stream's one view in flight (`Pipeline._step`)."""

    config: StreamConfig
    capture: Capture
    display: str
    tracker: ActionTracker  # the whole frame's action state (whole-frame mode)
    people: StreamPeople | None = None  # per-person mode: the tracks and each one's action state
    schedule: StreamSchedule | None = None  # once the source is open and its frame rate known
    state: StreamState = StreamState.CONNECTING  # as the capture last reported it
    stalled_since: float | None = None  # when it was found stalled (monotonic); None: not stalled
    # The stream broke off (stalled or reopened): its open actions end at this clip time (its last
    # frame's before the break) once its views cut before the break have been published.
    break_at: float | None = None
    open_error: str | None = None  # why it could never be opened
    failure: str | None = None  # why its capture thread stopped on an internal error
    ending: bool = False  # the source ended; serve what is left in the buffer, then close
    end_detail: str = ""  # why it ended, published once its last views are served
    closed: bool = False
    last_clip_end: float = 0.0
    # Streaming configs: the model's state for this stream (None: zeros) and the units it holds
    # since it was zeroed; written by the engine call of the stream's one view in flight.
    carried: np.ndarray | None = None
    units_carried: int = 0
    state_starts: int = 0  # times the state started from zeros, the first view's included
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    status_frames: int = 0  # frames captured at the previous status event, for fps_in
    status_time: float = field(default_factory=time.monotonic)

    @property
    def shown_state(self) -> StreamState:
        return StreamState.STALLED if self.stalled_since is not None else self.state


class Pipeline:
    def __init__(self, config: Config, engine: Engine, labels: list[str], bus: EventBus,
                 observers: list[HopObserver] = (), frame_taps: list[FrameTap] = (),
                 detector: PersonDetector | None = None):
        """``detector``: per-person mode's, when not the one the config's ``detection:`` names (a
        benchmark's metered one)."""
        if not config.streams:
            raise StreamrecError("no stream to read; pass --source (a file, camera index, URL or 'synthetic')")
        self.config = config
        self.engine = engine
        self.labels = labels
        self.bus = bus
        self.observers = observers
        pipe = config.pipeline
        self.scheduler = Scheduler(min(pipe.max_batch, engine.max_batch), pipe.max_wait_ms / 1000.0)
        self.activation = config.model.kwargs.get("head_activation", "softmax")  # the model head's
        self.detector = self._person_mode(config, engine, detector)
        self.person_stage = (PersonStage(self.detector, engine, config.clip, MAX_BOXES_PER_CLIP,
                                         colours=config.detection.tracker.uses_colours) if self.detector else None)
        self.streaming = self._streaming_spec(config, engine)  # None: whole clips
        self.dispatcher = EngineDispatcher(engine, self.scheduler, self.person_stage or (self._step if self.streaming
                                                                                         else None))
        self._reports: queue.SimpleQueue[CaptureReport] = queue.SimpleQueue()
        self._stopping = False
        self._stats_lock = threading.Lock()  # latencies are read by `stats` from other threads
        self.streams: dict[str, StreamRuntime] = {}
        for stream in config.streams:
            spec = parse_source(stream.source)
            # A hung source is reported stalled after stall_timeout_s, and its read gives up (and the
            # source is reopened) at twice that, so the report always comes first.
            source = create_source(spec, open_timeout_s=config.reconnect.open_timeout_s,
                                   read_timeout_s=2 * pipe.stall_timeout_s)
            capture = Capture(stream.id, source, spec.display, config.clip, pipe, config.reconnect,
                              stream_hop_frames=stream.hop_frames, region=stream.region, reports=self._reports,
                              frame_written=self.dispatcher.frame_written, frame_taps=frame_taps)
            postprocess = config.postprocess
            if stream.thresholds:
                postprocess = dataclasses.replace(postprocess, thresholds={**postprocess.thresholds, **stream.thresholds})
            people = (StreamPeople(labels, postprocess, config.detection.tracker, self.activation)
                      if self.detector else None)
            self.streams[stream.id] = StreamRuntime(stream, capture, spec.display,
                                                    ActionTracker(labels, postprocess, self.activation), people)

    @staticmethod
    def _person_mode(config: Config, engine: Engine, detector: PersonDetector | None) -> PersonDetector | None:
        """The person detector of per-person mode (None: whole-frame mode), once the config and the
        engine agree on the mode."""
        if config.detection is None:
            if engine.takes_boxes:
                raise StreamrecError(f"model {config.model.arch} scores person boxes (an RoI head) but the config has "
                                     "no detection: section to find them; add `detection: {}` (motion detection) "
                                     "or use a whole-frame config")
            return None
        if not engine.takes_boxes:
            raise StreamrecError(f"the config's detection: section needs a model with an RoI head, and "
                                 f"{config.model.arch} classifies whole frames; use a per-person config such as "
                                 "slowfast_tiny_roi, or drop the detection: section")
        return detector or create_detector(config.detection)

    @staticmethod
    def _streaming_spec(config: Config, engine: Engine) -> StreamingSpec | None:
        """How the streaming engine's calls line up with frames (None: a clip config's engine),
        once the config and the engine agree on the mode and the hop."""
        spec = getattr(engine, "streaming", None)
        if config.streaming is None:
            if getattr(engine, "state", None) is not None:
                raise StreamrecError(f"the {engine.name} engine runs a streaming model, which needs a config with a "
                                     "streaming: section (e.g. slowfast_tiny_streaming)")
            return None
        if spec is None:
            raise StreamrecError(f"the config's streaming: section needs an engine that runs the streaming form, "
                                 f"and this {engine.name} engine does not; make the engine from this config "
                                 "(no engine_file)")
        if spec.hop_frames != streaming_hop_frames(config):
            raise StreamrecError(f"the {engine.name} engine streams {spec.hop_frames} frames a call, the config's hop "
                                 f"is {streaming_hop_frames(config)}; make the engine from this config")
        return spec

    def stop(self) -> None:
        """Ask a running pipeline to finish (safe from signal handlers and other threads)."""
        self._stopping = True
        self.dispatcher.stop()

    def stats(self) -> dict[str, StreamStats]:
        """Every stream's figures now (safe from any thread)."""
        return {stream_id: self._stream_stats(runtime) for stream_id, runtime in self.streams.items()}

    # ------------------------------------------------------------------ run

    def run(self) -> None:
        """Serve every stream until all have ended or `stop` is called (even before this: then it
        only reports each stream ended); closes open actions."""
        try:
            if not self._stopping:
                self._warm_up()
            for runtime in self.streams.values():
                if not self._stopping:
                    runtime.capture.start()
            self._serve()
        finally:
            self._shutdown()
        failed = [f"stream {r.config.id}: {r.failure}" for r in self.streams.values() if r.failure]
        if failed:
            raise StreamrecError(f"{len(failed)} of {len(self.streams)} stream(s) stopped on an internal error "
                                 f"({'; '.join(failed)}); the others were served to the end")

    def _warm_up(self) -> None:
        """One inference on blank clips before the cameras start: lazy initialisation (and a
        broken engine) shows up here, not as a latency spike on the first real hop."""
        clip = self.config.clip
        if self.streaming:
            blank = {s.name: np.zeros((1, *s.clip_shape), np.uint8)
                     for s in hop_input_specs(clip, self.streaming.hop_frames)}
            self.engine.step({**blank, "state": self.engine.state.zeros(1)})
            return
        inputs = split_pathways(clip, np.zeros((1, clip.num_frames, clip.crop_size, clip.crop_size, 3), np.uint8))
        if self.engine.takes_boxes:  # one box over the whole frame
            inputs["boxes"] = np.array([[0, 0, 0, clip.crop_size, clip.crop_size]], np.float32)
        self.engine.infer(inputs)

    def _serve(self) -> None:
        next_status = time.monotonic() + self.config.pipeline.status_interval_s
        while not self._stopping:
            self._take_reports()
            self._watch_for_stalls()
            self._end_actions_of_broken_streams()
            if time.monotonic() >= next_status:
                for runtime in self.streams.values():
                    if not runtime.ending:
                        self._emit_status(runtime, "periodic")
                next_status = time.monotonic() + self.config.pipeline.status_interval_s
            for call in self.dispatcher.ended_calls(timeout=LOOK_AROUND_S):
                self._publish(call)
            if self.dispatcher.idle:
                self._close_ended_streams()
                if all(r.closed for r in self.streams.values()):
                    self._raise_if_none_opened()
                    return

    # ------------------------------------------------------------------ streaming calls

    def _step(self, batch: Batch) -> list[np.ndarray | None]:
        """One streaming engine call, on an engine worker: each view's stream's state gathered into
        its row (zeros where the view restarts the stream), the new state scattered back. Returns
        each view's logits, or None while its stream's state holds fewer than ``warmup_units``
        units. Each stream has one view in flight (`StepSchedule`), so no two calls share a row."""
        runtimes = [self.streams[view.stream_id] for view in batch.views]
        state = self.engine.state.zeros(len(runtimes))
        for row, (view, runtime) in enumerate(zip(batch.views, runtimes)):
            if view.restarts:
                runtime.carried, runtime.units_carried = None, 0
            if runtime.carried is not None:
                state[row] = runtime.carried
            elif runtime.units_carried == 0:
                runtime.state_starts += 1
        try:
            logits, new_state = self.engine.step({**batch.inputs, "state": state})
        except BaseException:
            for runtime in runtimes:  # the state these views carried is lost: their streams start again
                runtime.carried, runtime.units_carried = None, 0
            raise
        warm = []
        for row, runtime in enumerate(runtimes):
            if not np.isfinite(new_state[row]).all():  # (an fp16 overflow): this stream alone starts again
                log.warning("%s: the model's state overflowed (not finite); the stream's state starts again",
                            runtime.display)
                runtime.carried, runtime.units_carried = None, 0
                warm.append(None)
                continue
            runtime.carried = new_state[row].copy()  # a view would keep the whole batch's state alive
            runtime.units_carried = min(runtime.units_carried + self.streaming.units, self.streaming.warmup_units)
            warm.append(logits[row] if runtime.units_carried >= self.streaming.warmup_units else None)
        return warm

    def _described(self, view: View) -> View:
        """A streaming view stamped with the window its logits describe: ``clip_units`` long,
        ending ``delay_units`` units before the hop's last Fast frame (on the stream's clock, at the
        training rate; never before the stream's first frame, which a warm state comes after)."""
        clip = self.config.clip
        start, end = self.streaming.described_window(view.clip_end, clip.sampling_rate, clip.train_fps)
        return dataclasses.replace(view, clip_start=start, clip_end=end)

    # ------------------------------------------------------------------ results

    def _publish(self, call: EngineCall) -> None:
        views = call.batch.views
        try:
            outputs = call.output.result()
        except Exception:
            ids = ", ".join(v.stream_id for v in views)
            log.exception("engine failed on a batch of %d views (streams %s); batch dropped", len(views), ids)
            return
        for view, output in zip(views, outputs):
            runtime = self.streams[view.stream_id]
            if view.follows_gap:  # nothing before the gap may carry over into what comes after it
                at = view.follows_gap.last_frame_at
                self._end_open_actions(runtime, runtime.last_clip_end if at is None else at, "stream_lost",
                                       restart=True)
            if self.streaming:
                if output is None:  # the call only fed the stream's state: it holds less than a window yet
                    continue
                view = self._described(view)
            latency_ms = (time.monotonic() - view.newest_capture_time) * 1000.0
            with self._stats_lock:
                runtime.latencies_ms.append(latency_ms)
            common = {"clip_start": round(view.clip_start, 3), "clip_end": round(view.clip_end, 3),
                      "latency_ms": round(latency_ms, 1)}
            if runtime.people is None:
                hop = self._publish_frame(runtime, view, output, common)
            else:
                hop = self._publish_people(runtime, view, output, common)
            runtime.last_clip_end = view.clip_end
            for observer in self.observers:
                observer(hop)

    def _publish_frame(self, runtime: StreamRuntime, view: View, logits: np.ndarray, common: dict) -> HopResult:
        """Whole-frame mode: one label set for the stream."""
        tracker = runtime.tracker
        changes = tracker.update(logits, view.clip_end, view.clip_start)
        top_k = tracker.top_k()
        for change in changes:
            self._emit_action(runtime, change, common, top_k)
        if self.config.events.predictions:
            self.bus.emit("prediction", view.stream_id, topk=top_k, **common)
        return HopResult(view, tracker.probabilities, tracker.scores, tuple(changes), top_k, tracker.active_since(),
                         tracker.thresholds)

    def _publish_people(self, runtime: StreamRuntime, view: View, rows: PersonRows, common: dict) -> HopResult:
        """Per-person mode: the hop's boxes join tracks; each track's actions start and end."""
        hop = runtime.people.hop(rows, view.clip_end, view.clip_start)
        to_source = self._to_source(runtime)
        ended = {track.id for track in hop.tracks.ended}
        self._emit_person_changes(runtime, [c for c in hop.changes if c.track.id in ended], hop.top_k, common,
                                  to_source)
        for track in hop.tracks.ended:
            self._emit_track_end(runtime, track, "person_left", to_source)
        for track in hop.tracks.started:
            self.bus.emit("track_start", runtime.config.id, track_id=track.id, box=_box(to_source(track.box)),
                          **common)
        self._emit_person_changes(runtime, [c for c in hop.changes if c.track.id not in ended], hop.top_k, common,
                                  to_source)
        people = tuple(PersonView(t.id, _box(to_source(t.box)), hop.top_k[t.id], hop.active.get(t.id, {}))
                       for t in hop.tracks.seen)
        if self.config.events.predictions:
            self.bus.emit("prediction", view.stream_id, persons=[
                {"track_id": p.track_id, "box": list(p.box), "topk": p.top_k} for p in people], **common)
        tracker = runtime.tracker
        return HopResult(view, tracker.probabilities, tracker.scores, tuple(c.change for c in hop.changes), [],
                         {}, tracker.thresholds, people)

    def _emit_person_changes(self, runtime: StreamRuntime, changes: list[PersonChange], top_k: dict[int, list],
                             common: dict, to_source) -> None:
        for person in changes:
            self._emit_action(runtime, person.change, common, top_k.get(person.track.id, []),
                              track_id=person.track.id, box=_box(to_source(person.track.box)))

    def _emit_track_end(self, runtime: StreamRuntime, track: Track, reason: str, to_source) -> None:
        self.bus.emit("track_end", runtime.config.id, track_id=track.id, box=_box(to_source(track.box)),
                      first_seen=round(track.first_seen, 3), last_seen=round(track.last_seen, 3), reason=reason)

    def _to_source(self, runtime: StreamRuntime):
        """A function mapping a box in the model input's pixels to the stream's source frame."""
        size = runtime.capture.source_size
        if size is None:
            return lambda box: np.asarray(box, np.float32)
        geometry = SourceGeometry(size[0], size[1], runtime.config.region, self.config.clip)
        return lambda box: geometry.to_source(np.asarray(box, np.float32).reshape(1, 4))[0]

    def _emit_action(self, runtime: StreamRuntime, change: ActionChange, common: dict, top_k: list[list],
                     **person: object) -> None:
        fields = {"label": change.label, "score": round(change.score, 4), "topk": top_k, **person, **common,
                  "onset": round(change.onset, 3)}
        if change.type == "action_end":
            fields["started_at"] = round(change.started_at, 3)
            fields["duration_s"] = round(max(0.0, common["clip_end"] - change.started_at), 3)  # never -0.0
            fields["reason"] = change.reason
        self.bus.emit(change.type, runtime.config.id, **fields)

    def _end_open_actions(self, runtime: StreamRuntime, at: float, reason: str, restart: bool = False) -> None:
        """End a stream's open actions at clip time ``at`` (and, with ``restart``, its smoothing); in
        per-person mode, end every track and what it was doing."""
        common = {"clip_start": round(at, 3), "clip_end": round(at, 3), "latency_ms": 0.0}
        if runtime.people is not None:
            update, changes = runtime.people.close(reason)
            to_source = self._to_source(runtime)
            self._emit_person_changes(runtime, changes, {}, common, to_source)
            for track in update.ended:
                self._emit_track_end(runtime, track, reason, to_source)
            self.person_stage.forget(runtime.config.id)
            return
        tracker = runtime.tracker
        changes = tracker.restart(reason) if restart else tracker.close(reason)
        top_k = tracker.top_k()
        for change in changes:
            self._emit_action(runtime, change, common, top_k)

    # ------------------------------------------------------------------ stream state

    def _take_reports(self) -> None:
        """Apply what the capture threads reported, in the order they did."""
        while True:
            try:
                report = self._reports.get_nowait()
            except queue.Empty:
                return
            runtime = self.streams[report.stream_id]
            if isinstance(report, Opened):
                self._schedule(runtime, report)
                continue
            runtime.state, runtime.stalled_since = report.state, None
            if report.state is StreamState.RECONNECTING:
                self._note_break(runtime)
            if report.open_error:
                runtime.open_error = report.open_error
            if report.failure:
                runtime.failure = report.failure
            if report.state is StreamState.ENDED:
                runtime.ending, runtime.end_detail = True, report.detail  # published by _close_stream
            else:
                self._emit_status(runtime, report.detail)

    def _schedule(self, runtime: StreamRuntime, opened: Opened) -> None:
        """Schedule a stream once its source is open: only then are its frame rate and buffer known."""
        capture = runtime.capture
        if self.streaming:
            runtime.schedule = StepSchedule(runtime.config.id, opened.ring, self.config.clip, opened.fps,
                                            self.streaming.hop_frames, offline=capture.offline,
                                            live_clock=capture.source.live)
        else:
            hop = hop_frames(self.config.pipeline, opened.fps, runtime.config.hop_frames)
            runtime.schedule = StreamSchedule(runtime.config.id, opened.ring, self.config.clip, opened.fps, hop,
                                              offline=capture.offline, live_clock=capture.source.live)
        self.scheduler.add(runtime.schedule)

    def _watch_for_stalls(self) -> None:
        """A live source without a steady run of frames for ``stall_timeout_s`` is reported stalled,
        once, and its open actions end (its capture reopens it at twice that); a steady run of
        frames makes it live again, a stray frame does not."""
        now, timeout = time.monotonic(), self.config.pipeline.stall_timeout_s
        for runtime in self.streams.values():
            capture = runtime.capture
            if runtime.stalled_since is not None:
                if capture.last_steady_time > runtime.stalled_since:
                    runtime.stalled_since = None
                    self._emit_status(runtime, "frames flowing again")
            elif (runtime.state is StreamState.LIVE and capture.source.live
                  and now - capture.last_steady_time > timeout):
                runtime.stalled_since = now
                self._emit_status(runtime, f"no steady frames for {now - capture.last_steady_time:.1f} s")
                self._note_break(runtime)

    def _note_break(self, runtime: StreamRuntime) -> None:
        """The stream broke off: note the clip time of its last frame, for ending its actions."""
        if runtime.break_at is None and runtime.schedule is not None:
            newest = runtime.schedule.clip_time_of_newest()
            runtime.break_at = runtime.last_clip_end if newest is None else newest

    def _end_actions_of_broken_streams(self) -> None:
        """End the open actions of streams that broke off, once their views cut before the break
        have been published (so a result from before the break cannot reopen one after it)."""
        for runtime in self.streams.values():
            if runtime.break_at is not None and not self.dispatcher.in_flight(runtime.config.id):
                self._end_open_actions(runtime, runtime.break_at, "stream_lost", restart=True)
                runtime.break_at = None

    def _raise_if_none_opened(self) -> None:
        """If no stream could be opened at all, the run failed: say why (one stream that cannot be
        opened among others that can is only reported, in its status events and the log)."""
        errors = [r.open_error for r in self.streams.values()]
        if all(errors):
            raise StreamrecError("; ".join(errors))

    def _close_ended_streams(self) -> None:
        for runtime in self.streams.values():
            if runtime.ending and not runtime.closed and not (runtime.schedule and runtime.schedule.due()):
                self._close_stream(runtime)

    def _close_stream(self, runtime: StreamRuntime) -> None:
        runtime.closed = True
        if runtime.open_error and not all(r.open_error for r in self.streams.values()):
            log.error("%s; the other streams go on", runtime.open_error)
        if runtime.schedule:
            self.scheduler.remove(runtime.config.id)
        self._end_open_actions(runtime, runtime.last_clip_end, "stopped" if self._stopping else "stream_ended")
        runtime.state, runtime.stalled_since = StreamState.ENDED, None
        self._emit_status(runtime, runtime.end_detail or "stopped")

    # ------------------------------------------------------------------ figures

    def _stream_stats(self, runtime: StreamRuntime) -> StreamStats:
        capture, schedule = runtime.capture, runtime.schedule
        frames = capture.frames_captured
        with self._stats_lock:
            recent = np.array(runtime.latencies_ms) if runtime.latencies_ms else None
        return StreamStats(
            stream=runtime.config.id, source=runtime.display, state=runtime.shown_state.value,
            source_fps=capture.fps, offline=capture.offline,
            frames_captured=frames, frames_dropped=capture.frames_dropped, last_frame_time=capture.last_frame_time,
            hops_due=schedule.hops_due(frames) if schedule else 0,
            hops_served=schedule.views if schedule else 0,
            hops_skipped=schedule.hops_skipped if schedule else 0,
            latency_ms_p50=float(np.percentile(recent, 50)) if recent is not None else None,
            latency_ms_p99=float(np.percentile(recent, 99)) if recent is not None else None,
            error=runtime.open_error or runtime.failure,
            **({"state_restarts": max(0, runtime.state_starts - 1),
                "warming_up": runtime.units_carried < self.streaming.warmup_units} if self.streaming else {}),
        )

    def _emit_status(self, runtime: StreamRuntime, detail: str) -> None:
        stats, now = self._stream_stats(runtime), time.monotonic()
        fps_in = (stats.frames_captured - runtime.status_frames) / max(now - runtime.status_time, 1e-6)
        runtime.status_frames, runtime.status_time = stats.frames_captured, now
        self.bus.emit(
            "status", stats.stream,
            state=stats.state, detail=detail, source=stats.source,
            fps_in=round(fps_in, 2),
            frames_captured=stats.frames_captured, frames_dropped=stats.frames_dropped,
            hops_served=stats.hops_served, hops_skipped=stats.hops_skipped,
            latency_ms_p50=round(stats.latency_ms_p50, 1) if stats.latency_ms_p50 is not None else None,
            latency_ms_p99=round(stats.latency_ms_p99, 1) if stats.latency_ms_p99 is not None else None,
            **({"state_restarts": stats.state_restarts, "warming_up": stats.warming_up}
               if stats.state_restarts is not None else {}),
        )

    # ------------------------------------------------------------------ shutdown

    def _shutdown(self) -> None:
        for call in self.dispatcher.drain():  # their views were cut: their events are owed
            self._publish(call)
        for runtime in self.streams.values():
            runtime.capture.stop()
        for runtime in self.streams.values():
            if runtime.capture.is_alive():
                runtime.capture.join(JOIN_TIMEOUT_S)
        self._take_reports()
        for runtime in self.streams.values():
            if not runtime.closed:
                self._close_stream(runtime)


def _box(box: np.ndarray) -> tuple[float, float, float, float]:
    """A box for events: source pixels to a tenth."""
    return tuple(round(float(v), 1) for v in box)
