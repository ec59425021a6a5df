"""``bench pipeline``: N live streams through the real pipeline, and the most it serves in real time.

A trial builds a `streamrec.pipeline.Pipeline` over N streams (synthetic cameras, video
files played at their own frame rate, or network URLs), runs it for a set time, and reads
what happened from the pipeline itself:

- per-hop capture→event latency from the ``prediction`` events it publishes (each carries the
  time from the capture of the clip's newest frame to publishing);
- hops due, served and skipped, frames captured and dropped, from `Pipeline.stats`, and the
  real capture rate from a frame tap;
- every engine call's batch size and duration from a thin wrapper around the engine;
- CPU use and RSS over time from a sampler thread.

The engine alone is timed on the same engine object at the batch sizes the trial used, so
end-to-end clips/s and latency are set against the engine-only figures of the same run.
`search_max_streams` doubles the stream count while every stream is served in real time
(no missed hop, capture at its frame rate, p99 latency under the bound), then bisects.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

from streamrec.backends import Engine, EngineWrapper
from streamrec.bench.engine import random_inputs
from streamrec.bench.machine import ResourceSampler
from streamrec.bench.report import Column, new_figure, save_figure, table
from streamrec.bench.timing import latency_summary, time_calls
from streamrec.config import Config, EventsConfig, StreamConfig
from streamrec.detection import create_detector
from streamrec.errors import StreamrecError
from streamrec.events import EventBus, MemorySink
from streamrec.sources import SyntheticSource

if TYPE_CHECKING:
    from streamrec.pipeline import StreamStats

log = logging.getLogger(__name__)
CAPTURE_KEEPS_UP = 0.97  # a stream keeps up if it captured at least this share of its frame rate
DRIFT_WARNING = 1.15  # engine-only speeds before and after a trial further apart than this are reported


GOLDEN = (math.sqrt(5) - 1) / 2  # successive multiples' fractions spread evenly over [0, 1) for any count


@dataclass(frozen=True)
class PipelinePlan:
    sources: tuple[str, ...]  # cycled over the streams; "synthetic" gets size, fps, a seed and a start per stream
    fps: float = 30.0
    size: str = "320x240"
    duration_s: float = 20.0
    p99_bound_ms: float | None = None  # a trial with a higher p99 is not real time
    engine_iterations: int = 20
    engine_seconds: float = 3.0  # each engine-only reference times at least this long (see `engine_only`)
    # The synthetic cameras' first frames are spread over this long (a hop): independent cameras'
    # hops fall due at different moments, where cameras started together would ask for every
    # stream's hop at once, every hop.
    camera_spread_s: float = 0.0

    def stream_sources(self, count: int) -> list[str]:
        sources = []
        for index in range(count):
            source = self.sources[index % len(self.sources)]
            if source == "synthetic":
                start = round(index * GOLDEN % 1.0 * self.camera_spread_s, 4)
                source = f"synthetic:size={self.size},fps={self.fps:g},seed={index}" + (f",start={start:g}" if start else "")
            sources.append(source)
        return sources


class MeteredEngine(EngineWrapper):
    """An engine that records every call's start, duration and batch size (clips, and for a
    per-person engine, the person boxes it scored)."""

    def __init__(self, engine: Engine):
        super().__init__(engine)
        self.calls: list[tuple[float, float, int]] = []  # (monotonic start, seconds, clips)
        self.boxes: list[int] = []  # per call

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        start = time.monotonic()
        logits = self.engine.infer(inputs)
        self._record(start, inputs)
        return logits

    def step(self, inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        start = time.monotonic()
        outputs = self.engine.step(inputs)
        self._record(start, inputs)
        return outputs

    def _record(self, start: float, inputs: Mapping[str, np.ndarray]) -> None:
        clips = len(next(array for name, array in inputs.items() if name not in ("boxes", "state")))
        self.calls.append((start, time.monotonic() - start, clips))
        self.boxes.append(len(inputs["boxes"]) if "boxes" in inputs else 0)


class NoEngine(EngineWrapper):
    """The engine contract at no cost: zero logits at once, and each stream's state as it came.
    A trial on it measures everything but the model (capture, scheduling, postprocess, events):
    the most streams this machine serves in real time whatever model it runs. Zero logits raise
    no action, so no action events are published."""

    name = "none"

    def __init__(self, engine: Engine, num_classes: int):
        super().__init__(engine)
        self.num_classes = num_classes

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        rows = inputs["boxes"] if "boxes" in inputs else next(iter(inputs.values()))
        return np.zeros((len(rows), self.num_classes), np.float32)

    def step(self, inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        state = inputs["state"]
        return np.zeros((len(state), self.num_classes), np.float32), state


class MeteredDetector:
    """A person detector that records every call's duration and keyframe count (per-person mode)."""

    def __init__(self, detector):
        self.detector = detector
        self.calls: list[tuple[float, int]] = []  # (seconds, keyframes)

    def detect(self, keyframes):
        start = time.monotonic()
        found = self.detector.detect(keyframes)
        self.calls.append((time.monotonic() - start, len(keyframes)))
        return found

    def __getattr__(self, name):  # observe, forget, ...: as the detector does
        return getattr(self.detector, name)


def prediction_latencies(predictions: MemorySink) -> dict[str, list[float]]:
    """Each stream's capture→event latencies (ms), in order, from its ``prediction`` events."""
    latencies: dict[str, list[float]] = {}
    for event in predictions.events("prediction"):
        latencies.setdefault(event["stream"], []).append(event["latency_ms"])
    return latencies


class CaptureClock:
    """A frame tap that notes when each stream's first and latest frames were read."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.count: Counter = Counter()

    def __call__(self, stream_id: str, index: int, media_time: float, frame: np.ndarray) -> None:
        now = time.monotonic()
        self.first.setdefault(stream_id, now)
        self.last[stream_id] = now
        self.count[stream_id] += 1

    def fps(self, stream_id: str, until: float) -> float | None:
        """Frames per second from the stream's first frame to ``until``: a stream that stopped early scores low."""
        if self.count[stream_id] < 2:
            return None
        return (self.count[stream_id] - 1) / max(until - self.first[stream_id], 1e-9)


def trial_config(config: Config, sources: list[str]) -> Config:
    """The config for a trial: these streams, files paced like cameras, events to memory only."""
    return config.replace(
        streams=tuple(StreamConfig(id=f"cam{i}", source=source) for i, source in enumerate(sources)),
        pipeline=dataclasses.replace(config.pipeline, realtime=True),
        events=EventsConfig(publish=None, stdout=False, predictions=True, event_log=None),
    )


def run_trial(config: Config, engine: Engine, labels: list[str], plan: PipelinePlan, streams: int) -> dict:
    """Run ``streams`` streams through the pipeline for ``plan.duration_s`` and measure it."""
    from streamrec.pipeline import Pipeline

    sources = plan.stream_sources(streams)
    metered, predictions, clock = MeteredEngine(engine), MemorySink({"prediction"}), CaptureClock()
    detector = MeteredDetector(create_detector(config.detection)) if config.detection is not None else None
    bus = EventBus([predictions])
    pipeline = Pipeline(trial_config(config, sources), metered, labels, bus, frame_taps=[clock], detector=detector)
    log.info("pipeline trial: %d stream(s) for %.0f s", streams, plan.duration_s)
    stopped: list[float] = []

    def stop() -> None:
        stopped.append(time.monotonic())
        pipeline.stop()

    sampler = ResourceSampler().start()
    stopper = threading.Timer(plan.duration_s, stop)
    start = time.monotonic()
    stopper.start()
    try:
        pipeline.run()
    finally:
        stopper.cancel()
        end = stopped[0] if stopped else time.monotonic()  # not the shutdown that follows
        sampler.stop()
        bus.close()
    if end - start < 0.9 * plan.duration_s:
        log.warning("the pipeline stopped after %.1f s of %.0f: every source ended early", end - start, plan.duration_s)
    latencies = prediction_latencies(predictions)
    per_stream = [_stream_figures(stats, clock, end, latencies.get(stats.stream, []))
                  for stats in pipeline.stats().values()]
    published = [(e.emitted_at, e.fields["latency_ms"]) for e in predictions.received]
    figures = _trial_figures(streams, per_stream, metered.calls[1:], engine.parallel_calls, latencies, published,
                             sampler, plan, start, end)
    if detector is not None:
        figures.update(person_figures(detector.calls, metered, figures["window_s"]))
    return figures


def person_figures(detector_calls: list[tuple[float, int]], engine: MeteredEngine, window_s: float) -> dict:
    """Per-person mode: the detector's time per keyframe and the person boxes scored per second."""
    per_keyframe = [seconds / max(1, keyframes) for seconds, keyframes in detector_calls]
    boxes = sum(engine.boxes[1:])  # after the warm-up call
    roi_ms = [seconds * 1000.0 for _, seconds, _ in engine.calls[1:]]
    return {
        "persons_per_s": round(boxes / window_s, 2) if window_s > 0 else None,
        "persons_per_clip": round(boxes / max(1, sum(clips for _, _, clips in engine.calls[1:])), 2),
        "detector_ms_per_keyframe_p50": round(float(np.percentile(per_keyframe, 50)) * 1000.0, 2) if per_keyframe else None,
        "detector_ms_per_keyframe_p99": round(float(np.percentile(per_keyframe, 99)) * 1000.0, 2) if per_keyframe else None,
        "roi_call_ms_p50": round(float(np.percentile(roi_ms, 50)), 2) if roi_ms else None,
    }


def person_videos(folder: Path, people: int, fps: float, duration_s: float, count: int = 4) -> list[str]:
    """``count`` generated videos of ``people`` people each at ``fps``, long enough for a trial of
    ``duration_s`` with room to spare: per-person trials cycle their streams over them."""
    from streamrec.procedural_group import group_scene, write_group_video

    length = duration_s + 15.0  # the engine-only reference and the start-up come first
    return [str(write_group_video(group_scene(seed, length, people=people, fps=round(fps)), folder / f"people{seed}.mp4"))
            for seed in range(count)]


def measured_trial(config: Config, engine: Engine, labels: list[str], plan: PipelinePlan, streams: int,
                   max_batch: int) -> dict:
    """A trial set against the engine alone, timed just before and just after it.

    Each trial has its own reference, so on a machine whose speed drifts (a shared or
    throttling one) a trial is held against the speed of its own minutes.
    """
    before = engine_only(engine, config, max_batch, plan.engine_iterations, plan.engine_seconds)
    figures = run_trial(config, engine, labels, plan, streams)
    references = {batch: engine_only(engine, config, batch, plan.engine_iterations, plan.engine_seconds,
                                     before if batch == max_batch else None)
                  for batch in sorted({figures["modal_batch"] or max_batch, max_batch})}
    figures.update(compare_with_engine(figures, references))
    figures["engine_only"] = list(references.values())
    return figures


def median_ratios(trials: list[dict]) -> dict | None:
    """The median end-to-end ratios over repeated trials of one stream count."""
    if len(trials) < 2 or len({t["streams"] for t in trials}) > 1:
        return None
    medians = {}
    for key in ("e2e_over_engine_clips", "p99_minus_engine_p99_ms", "latency_ms_p99", "clips_per_s"):
        values = [t[key] for t in trials if t.get(key) is not None]
        medians[key] = round(float(np.median(values)), 3) if values else None
    return {"trials": len(trials), **medians}


def _stream_figures(stats: StreamStats, clock: CaptureClock, end: float, latencies_ms: list[float]) -> dict:
    capture_fps = clock.fps(stats.stream, end)
    last_frame = clock.last.get(stats.stream)
    return {
        "stream": stats.stream,
        "source": stats.source,
        "source_fps": round(stats.source_fps, 2),
        "capture_fps": round(capture_fps, 2) if capture_fps else None,
        "frames_captured": stats.frames_captured,
        "frames_dropped": stats.frames_dropped,
        "last_frame_age_s": round(end - last_frame, 3) if last_frame is not None else None,
        "hops_due": stats.hops_due,
        "hops_served": stats.hops_served,
        "hops_skipped": stats.hops_skipped,
        "hops_missed": max(0, stats.hops_due - stats.hops_served - 1),  # one hop may still be in flight at the stop
        "state_restarts": stats.state_restarts,  # a streaming config's model state started again (None: clip config)
        **latency_summary(np.array(latencies_ms) / 1000.0),
        "error": stats.error,
    }


def _trial_figures(streams: int, per_stream: list[dict], calls: list[tuple[float, float, int]], parallel_calls: int,
                   latencies_ms: dict[str, list[float]], published: list[tuple[float, float]],
                   sampler: ResourceSampler, plan: PipelinePlan, start: float, end: float) -> dict:
    """Overall figures of one trial; ``calls`` are the engine calls after the pipeline's warm-up call,
    ``published`` each prediction's (monotonic time published, latency ms)."""
    window = end - calls[0][0] if calls else 0.0  # from the first served batch to the stop
    clips = sum(batch for _, _, batch in calls)
    batches = Counter(batch for _, _, batch in calls)
    latencies = np.concatenate([np.array(v) for v in latencies_ms.values()]) / 1000.0 \
        if latencies_ms else np.array([])
    figures = {
        "streams": streams,
        "duration_s": round(end - start, 2),
        "window_s": round(window, 2),
        "hops_due": sum(s["hops_due"] for s in per_stream),
        "hops_served": sum(s["hops_served"] for s in per_stream),
        "hops_skipped": sum(s["hops_skipped"] for s in per_stream),
        "hops_missed": sum(s["hops_missed"] for s in per_stream),
        "frames_captured": sum(s["frames_captured"] for s in per_stream),
        "frames_dropped": sum(s["frames_dropped"] for s in per_stream),
        "clips_per_s": round(clips / window, 3) if window > 0 else None,
        # the share of the trial each of the engine's parallel calls was busy, on average
        "engine_busy_fraction": round(sum(d for _, d, _ in calls) / (window * parallel_calls), 3)
        if window > 0 else None,
        "batch_histogram": {str(size): count for size, count in sorted(batches.items())},
        "modal_batch": batches.most_common(1)[0][0] if batches else None,
        **latency_summary(latencies),
        "process_cpu_percent_mean": sampler.mean("process_cpu"),
        "system_cpu_percent_mean": sampler.mean("system_cpu"),
        "host_rss_peak_mib": round(sampler.peak_rss_mib(), 1),
        "resources": sampler.samples,
        **latency_breakdown(calls, published),
        "latency_timeline": [[round(t - start, 3), ms] for t, ms in published],
        "per_stream": per_stream,
    }
    figures["not_realtime_because"] = _realtime_failures(figures, plan)
    figures["realtime"] = not figures["not_realtime_because"]
    return figures


def latency_breakdown(calls: list[tuple[float, float, int]], events: list[tuple[float, float]]) -> dict:
    """Where each hop's capture→event latency went: before its engine call, in it, and after it.

    A prediction is published after the engine call that computed it returns (once the next
    batch has been handed to the engine), before the next call ends, so each event belongs to
    the last call that ended before it. Before the call is the wait for the batch in flight,
    for the batch to fill and for the view to be cut; after it, handing the next batch over,
    postprocessing and publishing.
    """
    if not calls or not events:
        return {}
    starts = np.array([start for start, _, _ in calls])
    ends = starts + np.array([seconds for _, seconds, _ in calls])
    published = np.array([t for t, _ in events])
    captured = published - np.array([ms for _, ms in events]) / 1000.0
    index = np.searchsorted(ends, published, side="right") - 1
    known = index >= 0
    index, published, captured = index[known], published[known], captured[known]
    parts = {"before_engine_ms": starts[index] - captured, "in_engine_ms": ends[index] - starts[index],
             "after_engine_ms": published - ends[index]}
    return {f"{name}_p{q}": round(float(np.percentile(values, q)) * 1000.0, 2)
            for name, values in parts.items() for q in (50, 99)}


def _realtime_failures(trial: dict, plan: PipelinePlan) -> list[str]:
    """Why a trial does not count as real time; empty when it does."""
    reasons = []
    if trial["hops_missed"] or trial["hops_skipped"]:
        reasons.append(f"{trial['hops_missed']} hop(s) missed ({trial['hops_skipped']} counted as skipped by the "
                       "scheduler)")
    slow = [s["stream"] for s in trial["per_stream"]
            if s["capture_fps"] is None or s["capture_fps"] < CAPTURE_KEEPS_UP * s["source_fps"]]
    if slow:
        reasons.append(f"capture below {CAPTURE_KEEPS_UP:.0%} of the frame rate on {len(slow)} stream(s)")
    quiet = [s for s in trial["per_stream"] if s["last_frame_age_s"] is not None and s["last_frame_age_s"] > 1.0]
    if quiet:
        reasons.append(f"{len(quiet)} stream(s) stopped delivering frames before the end (a file that ended, or a "
                       "stalled source)")
    failed = [s for s in trial["per_stream"] if s["error"]]
    if failed:
        reasons.append(f"{len(failed)} stream(s) failed, first: {failed[0]['error']}")
    if not trial["hops_served"]:
        reasons.append("no hop served")
    if plan.p99_bound_ms is not None and (trial["latency_ms_p99"] or math.inf) > plan.p99_bound_ms:
        reasons.append(f"p99 latency {trial['latency_ms_p99']} ms above the {plan.p99_bound_ms:g} ms bound")
    return reasons


def engine_only(engine: Engine, config: Config, batch: int, iterations: int, min_seconds: float = 0.0,
                before: dict | None = None) -> dict:
    """The engine alone at ``batch``: the figure end-to-end throughput is held against.

    At least ``iterations`` calls and ``min_seconds`` of them: a trial's p99 is taken over
    thousands of hops in many seconds, so a reference p99 over a few calls in a fraction of a
    second (the largest of twenty, in effect) would miss the hiccups of the machine that the
    trial's p99 includes. Timed before a trial (``before``) and again after it, the two pooled:
    a shared or throttled machine can change speed within a minute, and a reference timed only
    on one side of the trial would flatter or wrong the ratio. Each side's clips/s is kept.
    """
    inputs = random_inputs(config, batch)
    if getattr(engine, "state", None) is not None:  # a streaming engine: stepped from fresh streams' states
        inputs["state"] = engine.state.zeros(batch)
    timed = time_calls(engine, inputs, warmup=2, iterations=iterations)
    durations, wall_s = list(timed.durations), timed.wall_s
    while wall_s < min_seconds:
        more = time_calls(engine, inputs, warmup=0, iterations=iterations)
        durations += more.durations
        wall_s += more.wall_s
    sides = {"clips_per_s_after" if before else "clips_per_s_before": round(batch * len(durations) / wall_s, 3)}
    if before:
        sides["clips_per_s_before"] = before["clips_per_s_before"]
        durations = [duration_ms / 1000.0 for duration_ms in before["durations_ms"]] + durations
        wall_s += before["wall_s"]
    return {"batch": batch, "parallel_calls": engine.parallel_calls, "iterations": len(durations),
            "clips_per_s": round(batch * len(durations) / wall_s, 3), **sides, **latency_summary(durations),
            "wall_s": round(wall_s, 4), "durations_ms": [round(float(d) * 1000.0, 3) for d in durations]}


def engine_speed_drift(references: list[dict]) -> str | None:
    """A warning when the engine alone ran at clearly different speeds before and after a trial."""
    for reference in references:
        before, after = reference.get("clips_per_s_before"), reference.get("clips_per_s_after")
        if before and after and max(before, after) > DRIFT_WARNING * min(before, after):
            return (f"the engine alone ran at {before:g} clips/s (batch {reference['batch']}) just before the trial and "
                    f"{after:g} after: the machine's speed changed during the run, so its ratios are less reliable")
    return None


def streams_for_load(load: float, engine_clips_per_s: float, fps: float, hop_frames: int) -> int:
    """How many streams make the engine ``load`` busy: each stream asks for fps / hop clips a second."""
    return max(1, round(load * engine_clips_per_s * hop_frames / fps))


def search_max_streams(run: Callable[[int], dict], start: int, limit: int) -> tuple[int, list[dict]]:
    """The largest stream count whose trial is real time: double from ``start``, then bisect."""
    trials: list[dict] = []

    def passes(count: int) -> bool:
        trials.append(run(count))
        log.info("%d stream(s): %s", count, "real time" if trials[-1]["realtime"] else
                 "; ".join(trials[-1]["not_realtime_because"]))
        return trials[-1]["realtime"]

    best, count = 0, max(1, start)
    while passes(count):
        best = count
        if count >= limit:
            return best, trials
        count = min(count * 2, limit)
    low, high = best, count  # low passes (or is 0), high fails
    while high - low > 1:
        middle = (low + high) // 2
        if passes(middle):
            low = middle
        else:
            high = middle
    return low, trials


def compare_with_engine(trial: dict, references: dict[int, dict]) -> dict:
    """End-to-end against engine-only at the trial's most common batch size."""
    reference = references.get(trial["modal_batch"])
    if reference is None or trial["clips_per_s"] is None:
        return {"engine_only_batch": None, "e2e_over_engine_clips": None, "p99_minus_engine_p99_ms": None}
    p99 = trial["latency_ms_p99"]
    return {
        "engine_only_batch": reference["batch"],
        "engine_only_clips_per_s": reference["clips_per_s"],
        "engine_only_latency_ms_p99": reference["latency_ms_p99"],
        "e2e_over_engine_clips": round(trial["clips_per_s"] / reference["clips_per_s"], 3),
        "p99_minus_engine_p99_ms": round(p99 - reference["latency_ms_p99"], 2) if p99 is not None else None,
    }


MAX_TRIAL_S = 24 * 3600.0  # a trial, or the engine-only reference's least time: a day at most


def check_plan(plan: PipelinePlan) -> None:
    """Refuse a plan before the engine-only reference runs: a bad --fps or --size would otherwise
    be found only by the first trial's cameras, minutes in."""
    if not 0 < plan.duration_s <= MAX_TRIAL_S:
        raise StreamrecError(f"--duration must be above 0 and at most {MAX_TRIAL_S:g} s (a day), got {plan.duration_s:g}")
    if not 0 <= plan.engine_seconds <= MAX_TRIAL_S:
        raise StreamrecError(f"--engine-seconds must be from 0 (time just --engine-iters calls) to {MAX_TRIAL_S:g}, "
                             f"got {plan.engine_seconds:g}")
    low, high = SyntheticSource.FPS  # the generated cameras' and people videos' rate
    if not low <= plan.fps <= high:
        raise StreamrecError(f"--fps must be from {low:g} to {high:g}, got {plan.fps:g}")
    if "synthetic" in plan.sources:
        try:
            SyntheticSource.from_spec(f"synthetic:size={plan.size}")
        except StreamrecError:
            raise StreamrecError(f"--size must be WIDTHxHEIGHT, each side from {SyntheticSource.SIDES[0]} to "
                                 f"{SyntheticSource.SIDES[1]} pixels, at most 7680x4320 in all; got {plan.size!r}") from None
    if not plan.sources:
        raise StreamrecError("no source to benchmark; pass --source synthetic, a video file or an rtsp:// URL")


# --------------------------------------------------------------------------- presentation

COLUMNS = [
    Column("streams", "streams"), Column("hops due", "hops_due"), Column("served", "hops_served"),
    Column("missed", "hops_missed"), Column("frames", "frames_captured"), Column("dropped", "frames_dropped"),
    Column("clips/s", "clips_per_s", 2), Column("engine-only", "engine_only_clips_per_s", 2),
    Column("e2e/engine", "e2e_over_engine_clips", 3), Column("batch", "modal_batch"),
    Column("busy", "engine_busy_fraction", 2), Column("p50 ms", "latency_ms_p50", 1),
    Column("p95 ms", "latency_ms_p95", 1), Column("p99 ms", "latency_ms_p99", 1),
    Column("engine p99", "engine_only_latency_ms_p99", 1), Column("p99 - engine p99", "p99_minus_engine_p99_ms", 1),
    Column("CPU %", "process_cpu_percent_mean", 0),
    Column("RSS MiB", "host_rss_peak_mib", 0), Column("real time", lambda r: "yes" if r["realtime"] else "no"),
]
PERSON_COLUMNS = [
    Column("streams", "streams"), Column("persons/s", "persons_per_s", 1), Column("persons a clip", "persons_per_clip", 2),
    Column("detector ms a keyframe p50", "detector_ms_per_keyframe_p50", 2),
    Column("detector p99", "detector_ms_per_keyframe_p99", 2), Column("RoI call ms p50", "roi_call_ms_p50", 1),
]
BREAKDOWN_COLUMNS = [
    Column("streams", "streams"), Column("p50 ms", "latency_ms_p50", 1), Column("p99 ms", "latency_ms_p99", 1),
    Column("before engine p50", "before_engine_ms_p50", 1), Column("before engine p99", "before_engine_ms_p99", 1),
    Column("in engine p50", "in_engine_ms_p50", 1), Column("in engine p99", "in_engine_ms_p99", 1),
    Column("after p99", "after_engine_ms_p99", 1),
]
STREAM_COLUMNS = [
    Column("stream", "stream"), Column("capture fps", "capture_fps", 1), Column("frames", "frames_captured"),
    Column("dropped", "frames_dropped"), Column("hops due", "hops_due"), Column("served", "hops_served"),
    Column("missed", "hops_missed"), Column("skipped", "hops_skipped"), Column("p50 ms", "latency_ms_p50", 1),
    Column("p95 ms", "latency_ms_p95", 1),
    Column("p99 ms", "latency_ms_p99", 1),
]


def summary_text(document: dict, markdown: bool = False) -> str:
    trials = document["results"]
    lines = [table(trials, COLUMNS, markdown), ""]
    setup = document["setup"]
    if setup["load"] is not None:
        lines.append(f"Streams chosen to load the engine to {setup['load']:g} of its engine-only clips/s at batch "
                     f"{setup['max_batch']} ({setup['load_reference']['clips_per_s']:g}, the best of three timings).")
    calls = (f", {setup['parallel_calls']} calls at once of {setup['threads_per_call']} thread(s) each"
             if setup["parallel_calls"] > 1 else "")
    spread = setup.get("camera_spread_s")
    cameras = f" (their first frames spread over {spread:g} s, a hop, as independent cameras start)" if spread else ""
    lines.append(f"{setup['engine']} engine{calls}, max batch {setup['max_batch']}, hop {setup['hop_frames']} frames; "
                 f"sources {', '.join(setup['sources'])}{cameras}; {setup['duration_s']:g} s per trial. clips/s: clips served "
                 f"per second from the first served batch to the stop; latency: capture of a clip's newest frame to "
                 f"its prediction event; engine-only: the same engine alone at the trial's most common batch (with as "
                 f"many calls at once), timed just before and after each trial; busy: the share of the trial the engine's "
                 f"calls ran (per parallel call); CPU %: this process, 100 = one core.")
    if document.get("max_realtime_streams") is not None:
        bound = setup["p99_bound_ms"]
        lines.append(f"\nLargest number of streams served in real time (no missed hop, capture at frame rate"
                     f"{f', p99 under {bound:g} ms' if bound is not None else ''}): "
                     f"**{document['max_realtime_streams']}**.")
    if setup.get("persons"):
        lines += ["", table(trials, PERSON_COLUMNS, markdown),
                  f"Per-person mode: each stream a generated video of {setup['persons']} people at {setup['fps']:g} fps "
                  f"played like a camera, detector {setup['detector']}; persons/s: person boxes the RoI head scored "
                  f"per second; the detector's time is per keyframe (one a clip), on the engine's worker thread."]
    lines.append("")
    lines.append(table(trials, BREAKDOWN_COLUMNS, markdown))
    lines.append("Where the latency goes, per hop: before its engine call (waiting for the batch in flight, for the "
                 "batch to fill, for the view to be cut), in the call, and after it (handing the next batch over, "
                 "postprocessing, publishing).")
    median = document.get("median")
    if median:
        lines.append(f"\nMedian over the {median['trials']} trials: e2e/engine {median['e2e_over_engine_clips']}, "
                     f"p99 {median['latency_ms_p99']} ms, p99 - engine p99 {median['p99_minus_engine_p99_ms']} ms.")
    for trial in trials:
        drift = engine_speed_drift(trial["engine_only"])
        if drift:
            lines.append(f"{'- **Warning:** ' if markdown else 'warning: '}{trial['streams']} stream(s): {drift}.")
    if len(trials) == 1:
        lines += ["", table(trials[0]["per_stream"], STREAM_COLUMNS, markdown)]
    for trial in trials:
        if trial["not_realtime_because"]:
            lines.append(f"{'- ' if markdown else ''}{trial['streams']} stream(s) not real time: "
                         f"{'; '.join(trial['not_realtime_because'])}")
    return "\n".join(lines)


def plot(document: dict, path: str) -> None:
    """Latency and throughput (per stream count, or over time for one trial); RSS and CPU over time."""
    figure, (left, right) = new_figure(2)
    trials = document["results"]
    if len(trials) > 1:
        ordered = sorted(trials, key=lambda t: t["streams"])
        counts = [t["streams"] for t in ordered]
        left.plot(counts, [t["latency_ms_p99"] for t in ordered], marker="o", label="p99 latency (ms)")
        left.plot(counts, [t["latency_ms_p50"] for t in ordered], marker="o", label="p50 latency (ms)")
        twin = left.twinx()
        twin.plot(counts, [t["clips_per_s"] for t in ordered], marker="s", color="grey", label="clips/s")
        twin.set_ylabel("clips/s")
        left.set_xlabel("streams")
        left.set_title("per trial", fontsize=9)
        _legend(left, twin)
    else:
        timeline = np.array(trials[0]["latency_timeline"] or [[0.0, 0.0]])
        left.plot(timeline[:, 0], timeline[:, 1], ".", markersize=2, label="capture→event latency (ms)")
        left.set_xlabel("seconds since start")
        left.set_title(f"{trials[0]['streams']} stream(s)", fontsize=9)
        left.legend(fontsize=7, loc="upper left")
    left.set_ylabel("ms")
    resources = max(trials, key=lambda t: t["streams"])["resources"]
    times = [s["t"] for s in resources]
    right.plot(times, [s["rss_mib"] for s in resources], label="RSS (MiB)")
    right.set_ylabel("RSS (MiB)")
    right.set_xlabel("seconds since start")
    cpu = right.twinx()
    cpu.plot(times, [s["process_cpu"] for s in resources], color="tab:red", alpha=0.6, label="process CPU %")
    cpu.set_ylabel("process CPU % (100 = one core)")
    right.set_title(f"resources, {max(t['streams'] for t in trials)} stream(s)", fontsize=9)
    _legend(right, cpu)
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
    save_figure(figure, path, f"bench pipeline: {document['config']}")


def _legend(axis, twin) -> None:
    """One legend for a panel and its twin axis."""
    handles, labels = axis.get_legend_handles_labels()
    twin_handles, twin_labels = twin.get_legend_handles_labels()
    axis.legend(handles + twin_handles, labels + twin_labels, fontsize=7, loc="upper left")
