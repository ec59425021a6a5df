"""Streaming accuracy: action events scored against ground-truth segments.

Ground truth is a JSON file next to each video (``video.mp4`` → ``video.json``) holding
``segments``: ``[start, end, label]`` in source seconds. The pipeline's events become predicted
segments (see `segments_from_events`); each class's predicted and true segments are matched
one to one, best temporal IoU first, and a pair with IoU at least ``iou_threshold`` is a hit.
Precision, recall and F1 follow per class and overall (pooled over classes). Detection delay
is, for each hit, the time from the true segment's start to its ``action_start`` event (the
clip end of the hop that raised it): how long after a person starts falling the alarm goes off.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from streamrec.backends import Engine, EngineWrapper
from streamrec.errors import StreamrecError

IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class Segment:
    start: float  # source seconds
    end: float
    label: str
    detected_at: float | None = None  # predictions only: source time of the action_start event

    @property
    def duration(self) -> float:
        return self.end - self.start


def temporal_iou(a: Segment, b: Segment) -> float:
    intersection = max(0.0, min(a.end, b.end) - max(a.start, b.start))
    union = max(a.end, b.end) - min(a.start, b.start)
    return intersection / union if union > 0 else 0.0


# --------------------------------------------------------------------------- ground truth files


def ground_truth_path(video: str | Path) -> Path:
    return Path(video).with_suffix(".json")


def write_ground_truth(path: str | Path, segments: Iterable[Segment], **info: Any) -> None:
    data = {**info, "segments": [[round(s.start, 4), round(s.end, 4), s.label] for s in segments]}
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def read_ground_truth(path: str | Path, labels: Sequence[str] | None = None) -> list[Segment]:
    """The segments of a ground-truth file, each checked: a number for each time, finite, not negative,
    ending after it starts, and a label; with ``labels`` (the model's), one of them, since a segment
    of any other label could never be matched and would quietly lower the score. A bad segment is
    one `StreamrecError` line naming the file, the segment, the problem and the fix."""
    path = Path(path)
    if not path.is_file():
        raise StreamrecError(f"no ground truth {path}; put a JSON file with \"segments\": [[start, end, label], ...] "
                             "next to the video")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise StreamrecError(f"ground truth {path} is not JSON ({exc}); it needs "
                             "\"segments\": [[start, end, label], ...]") from None
    rows = data.get("segments") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise StreamrecError(f"ground truth {path} is not valid: it has no \"segments\" list; it needs "
                             "\"segments\": [[start, end, label], ...]")
    labels = None if labels is None else list(labels)
    segments = []
    for index, row in enumerate(rows):
        start, end, label = truth_row(path, f"segments[{index}]", row, ("start", "end", "label"))
        segments.append(Segment(*truth_span(path, f"segments[{index}]", label, start, end), label))
        check_truth_label(path, f"segments[{index}]", label, labels)
    return segments


def truth_row(path: Path, where: str, row: Any, fields: Sequence[str]) -> Sequence[Any]:
    """A ground-truth row with exactly ``fields``, or the error naming what it lacks."""
    layout = f"[{', '.join(fields)}]"
    if not isinstance(row, (list, tuple)):
        raise StreamrecError(f"ground truth {path} is not valid: {where} is {row!r}, not a list; write it as {layout}")
    if len(row) != len(fields):
        missing = "a field is missing" if len(row) < len(fields) else "it has extra values"
        raise StreamrecError(f"ground truth {path} is not valid: {where} {json.dumps(row)} has {len(row)} fields, not "
                             f"{len(fields)} ({missing}); write it as {layout}")
    return row


def _about(where: str, label: Any) -> str:
    return f"{where} ({json.dumps(label)})" if isinstance(label, str) else where


def truth_span(path: Path, where: str, label: Any, start: Any, end: Any) -> tuple[float, float]:
    """A true segment's start and end in source seconds: numbers, finite, not negative, end after start."""
    about = _about(where, label)
    times = []
    for name, value in (("start", start), ("end", end)):
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if number is None and isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise StreamrecError(f"ground truth {path} is not valid: {about} has {name} {value!r}, not a number; give it in "
                                 "seconds from the start of the video")
        if not math.isfinite(number) or number < 0:
            raise StreamrecError(f"ground truth {path} is not valid: {about} has {name} {number}; times are seconds from the "
                                 "start of the video: finite, 0 or more")
        times.append(float(number))
    if times[1] <= times[0]:
        problem = "ends where it starts (no length)" if times[1] == times[0] else "ends before it starts"
        raise StreamrecError(f"ground truth {path} is not valid: {about} {problem} ({times[0]:g} s to {times[1]:g} s), so it "
                             "could never be matched; write it as [start, end, label] with end after start")
    return times[0], times[1]


def check_truth_label(path: Path, where: str, label: Any, labels: Sequence[str] | None) -> None:
    """A true segment's (or box's) label must be a name, and one of ``labels`` when given."""
    if not isinstance(label, str) or not label.strip():
        raise StreamrecError(f"ground truth {path} is not valid: {where} has label {label!r}, not a name; give one of the "
                             "model's labels as a string")
    if labels is not None and label not in labels:
        raise StreamrecError(f"ground truth {path} is not valid: {_about(where, label)} has a label the model does not know, so "
                             f"it could never be matched; {label_hint(label, labels)}")


def label_hint(label: str, labels: Sequence[str]) -> str:
    """'did you mean ...?' for a close match among ``labels``, else the labels themselves (a few, for a long list)."""
    close = difflib.get_close_matches(label, list(labels), n=1) or difflib.get_close_matches(
        label.strip().lower(), [name.lower() for name in labels], n=1)
    if close:
        match = next(name for name in labels if name.lower() == close[0].lower())
        return f"did you mean {json.dumps(match)}? Fix the label, or evaluate with the config whose labels it uses"
    shown = ", ".join(labels[:12]) + (f", ... ({len(labels)} in all)" if len(labels) > 12 else "")
    return f"the model's labels are: {shown}. Fix the label, or evaluate with the config whose labels it uses"


# --------------------------------------------------------------------------- events to segments


def predicted_span(start: Mapping[str, Any], end: Mapping[str, Any]) -> tuple[float, float]:
    """Where an action's ``action_start`` and ``action_end`` events place it, in source seconds:
    from the start's ``onset`` (the mean start of the clips its smoothed score averaged:
    `streamrec.postprocess.ActionTracker.update`) to the start of the clip that ended it.

    Hysteresis raises an action only once its score is clearly high, when those clips are mostly
    the action, and ends it only once the score is clearly low, when the clip is mostly past it:
    the action began, and ended, about where those clips begin. (Clip centres, the estimate for a
    score that flips at 0.5, came out about half a second late on validation videos.)
    """
    return start["onset"], max(end["clip_start"], start["onset"])


def segments_from_events(events: Iterable[dict[str, Any]], known_after_s: float = 0.0) -> list[Segment]:
    """Predicted segments from one stream's ``action_start``/``action_end`` events, each where
    `predicted_span` places it, detected ``known_after_s`` after its start's ``clip_end``: a
    streaming form's events describe a window that ended that long before the frames that told
    it (`StreamRecord.known_after_s`)."""
    open_actions: dict[str, dict[str, Any]] = {}
    segments = []
    for event in events:
        label = event.get("label")
        if event["type"] == "action_start":
            open_actions[label] = event
        elif event["type"] == "action_end" and label in open_actions:
            start = open_actions.pop(label)
            segments.append(Segment(*predicted_span(start, event), label,
                                    detected_at=start["clip_end"] + known_after_s))
    return segments


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class ClassScore:
    true_positives: int
    false_positives: int
    false_negatives: int
    delays_s: tuple[float, ...]  # one per hit

    @property
    def precision(self) -> float:
        predicted = self.true_positives + self.false_positives
        return self.true_positives / predicted if predicted else 0.0

    @property
    def recall(self) -> float:
        actual = self.true_positives + self.false_negatives
        return self.true_positives / actual if actual else 0.0

    @property
    def f1(self) -> float:
        total = 2 * self.true_positives + self.false_positives + self.false_negatives
        return 2 * self.true_positives / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        delays = np.array(self.delays_s)
        return {
            "precision": round(self.precision, 4), "recall": round(self.recall, 4), "f1": round(self.f1, 4),
            "true_positives": self.true_positives, "false_positives": self.false_positives,
            "false_negatives": self.false_negatives,
            "delay_s_median": round(float(np.median(delays)), 3) if delays.size else None,
            "delay_s_p90": round(float(np.percentile(delays, 90)), 3) if delays.size else None,
        }


def match_segments(truth: list[Segment], predicted: list[Segment],
                   iou_threshold: float = IOU_THRESHOLD) -> list[tuple[Segment, Segment]]:
    """One-to-one pairs of the same label with IoU >= threshold, highest IoU first."""
    candidates = sorted(
        ((temporal_iou(t, p), i, j) for i, t in enumerate(truth) for j, p in enumerate(predicted)
         if t.label == p.label),
        reverse=True,
    )
    used_truth, used_predicted, pairs = set(), set(), []
    for iou, i, j in candidates:
        if iou < iou_threshold:
            break
        if i not in used_truth and j not in used_predicted:
            used_truth.add(i)
            used_predicted.add(j)
            pairs.append((truth[i], predicted[j]))
    return pairs


def score_segments(truth: list[Segment], predicted: list[Segment], labels: Iterable[str],
                   iou_threshold: float = IOU_THRESHOLD) -> dict[str, ClassScore]:
    """Per-class counts and delays for one video; ``labels`` are the classes scored (others are ignored)."""
    scores = {}
    for label in labels:
        t = [s for s in truth if s.label == label]
        p = [s for s in predicted if s.label == label]
        pairs = match_segments(t, p, iou_threshold)
        delays = tuple(pred.detected_at - true.start for true, pred in pairs if pred.detected_at is not None)
        scores[label] = ClassScore(len(pairs), len(p) - len(pairs), len(t) - len(pairs), delays)
    return scores


def combine(per_video: Iterable[dict[str, ClassScore]]) -> dict[str, ClassScore]:
    """Sum per-class counts (and pool delays) over several videos."""
    total: dict[str, ClassScore] = {}
    for scores in per_video:
        for label, s in scores.items():
            if label in total:
                t = total[label]
                s = ClassScore(t.true_positives + s.true_positives, t.false_positives + s.false_positives,
                               t.false_negatives + s.false_negatives, t.delays_s + s.delays_s)
            total[label] = s
    return total


def overall(scores: dict[str, ClassScore]) -> ClassScore:
    """Pooled over classes (micro average): every segment counts once, whatever its class."""
    return ClassScore(
        sum(s.true_positives for s in scores.values()),
        sum(s.false_positives for s in scores.values()),
        sum(s.false_negatives for s in scores.values()),
        tuple(d for s in scores.values() for d in s.delays_s),
    )


# --------------------------------------------------------------------------- running the pipeline


class MeanFastInput(EngineWrapper):
    """An engine whose Fast pathway sees only mean-colour frames (zero after normalisation): Slow alone."""

    def __init__(self, engine: Engine, mean: tuple[float, float, float]):
        super().__init__(engine)
        self.grey = np.round(np.array(mean) * 255).astype(np.uint8)

    def infer(self, inputs):
        fast = np.broadcast_to(self.grey, inputs["fast"].shape)
        return self.engine.infer({**inputs, "fast": np.ascontiguousarray(fast)})


@dataclass(frozen=True)
class Hop:
    clip_start: float
    clip_end: float
    probabilities: np.ndarray  # softmax of the hop's logits, before smoothing


@dataclass
class StreamRecord:
    events: list[dict[str, Any]]  # as the pipeline published them
    hops: list[Hop]  # every hop's scores, to replay the postprocess with other settings
    known_after_s: float = 0.0  # a streaming form's delay: its windows end this long before their hop's last frame


def stream_ids(videos: list[Path]) -> list[str]:
    """The stream id `run_pipeline` gives each video."""
    return [f"video{i}" for i in range(len(videos))]


def run_pipeline(config, videos: list[Path], zero_fast: bool = False, detector=None) -> dict[Path, StreamRecord]:
    """Run the real pipeline over the videos (one stream each, batched together); each video's
    events and hops. ``detector``: per-person mode's, instead of the config's."""
    from streamrec.backends import create_engine
    from streamrec.config import StreamConfig, load_labels
    from streamrec.events import EventBus, MemorySink
    from streamrec.pipeline import HopResult, Pipeline

    if zero_fast and "fast" not in config.clip.input_names:
        raise StreamrecError(f"--zero-fast needs a two-pathway model; {config.model.arch} has one pathway")
    streams = tuple(StreamConfig(id=name, source=str(v)) for name, v in zip(stream_ids(videos), videos))
    config = config.replace(streams=streams)
    engine = create_engine(config)
    if zero_fast:
        engine = MeanFastInput(engine, config.clip.mean)
    by_stream = {s.id: video for s, video in zip(streams, videos)}
    records = {video: StreamRecord([], []) for video in videos}

    def record_hop(hop: HopResult) -> None:
        view = hop.view
        records[by_stream[view.stream_id]].hops.append(Hop(view.clip_start, view.clip_end, hop.probabilities))

    collector = MemorySink()
    bus = EventBus([collector])
    pipeline = Pipeline(config, engine, load_labels(config), bus, observers=[record_hop], detector=detector)
    for record in records.values():
        record.known_after_s = pipeline.streaming.delay_s(config.clip.train_fps) if pipeline.streaming else 0.0
    pipeline.run()
    bus.close()
    for event in collector.events():
        if event["stream"] in by_stream:
            records[by_stream[event["stream"]]].events.append(event)
    return records


def replay(hops: list[Hop], labels: list[str], postprocess) -> list[dict[str, Any]]:
    """The action events the pipeline's own tracker publishes for these hops under ``postprocess``.

    With the run's settings this reproduces the run's events; with others it shows what they
    would have done, without running the model again (`sweep`).
    """
    from streamrec.postprocess import ActionTracker

    tracker = ActionTracker(labels, postprocess)
    events = []
    for hop in hops:
        for change in tracker.update(np.log(np.maximum(hop.probabilities, 1e-30)), hop.clip_end, hop.clip_start):
            events.append({"type": change.type, "label": change.label, "clip_start": hop.clip_start,
                           "clip_end": hop.clip_end, "onset": change.onset})
    end = hops[-1].clip_end if hops else 0.0
    events += [{"type": change.type, "label": change.label, "clip_start": end, "clip_end": end,
                "onset": change.onset} for change in tracker.close()]
    return events


SWEEP_SMOOTHING = (1, 2, 3, 4)
SWEEP_ENTER = (0.4, 0.5, 0.6, 0.7, 0.8)
SWEEP_EXIT = (0.2, 0.3, 0.4, 0.5)


def sweep(hops: list[list[Hop]], truth: list[list[Segment]], labels: list[str], scored: list[str], postprocess,
          iou_threshold: float = IOU_THRESHOLD, known_after_s: float = 0.0) -> list[tuple[Any, ClassScore]]:
    """Every smoothing / enter / exit combination of the grid, replayed over the same hops, best F1
    first (``known_after_s``: as `segments_from_events` takes it)."""
    from dataclasses import replace

    results = []
    for smoothing in SWEEP_SMOOTHING:
        for enter in SWEEP_ENTER:
            for exit_ in (e for e in SWEEP_EXIT if e <= enter):
                candidate = replace(postprocess, smoothing_hops=smoothing, enter_threshold=enter, exit_threshold=exit_)
                scores = combine(score_segments(t, segments_from_events(replay(h, labels, candidate), known_after_s),
                                                scored, iou_threshold) for h, t in zip(hops, truth))
                results.append((candidate, overall(scores)))
    return sorted(results, key=lambda r: (-r[1].f1, r[1].to_dict()["delay_s_median"] or 0.0))


# --------------------------------------------------------------------------- reporting


def report(scores: dict[str, ClassScore], info: dict[str, Any]) -> dict[str, Any]:
    """The JSON report: overall figures at the top level, then per class, then how they were obtained."""
    return {**overall(scores).to_dict(), "per_class": {k: v.to_dict() for k, v in scores.items()}, **info}


def format_table(scores: dict[str, ClassScore]) -> str:
    """One row a class and the overall row; a ratio with nothing to count (a class that neither
    happened nor was reported has no recall, precision or F1) shows '-', not a score of 0."""
    def row(name: str, s: ClassScore) -> str:
        d = s.to_dict()
        delay = lambda v: f"{v:8.2f}" if v is not None else f"{'-':>8}"  # noqa: E731
        tp, fp, fn = s.true_positives, s.false_positives, s.false_negatives
        ratio = lambda v, counted, width: f"{v:{width}.3f}" if counted else f"{'-':>{width}}"  # noqa: E731
        return (f"{name:<16} {tp:4d} {fp:4d} {fn:4d} {ratio(s.precision, tp + fp, 9)} {ratio(s.recall, tp + fn, 7)} "
                f"{ratio(s.f1, tp + fp + fn, 6)} {delay(d['delay_s_median'])} {delay(d['delay_s_p90'])}")

    header = f"{'class':<16} {'TP':>4} {'FP':>4} {'FN':>4} {'precision':>9} {'recall':>7} {'F1':>6} {'delay50':>8} {'delay90':>8}"
    lines = [header, "-" * len(header)] + [row(name, s) for name, s in scores.items()]
    lines += ["-" * len(header), row("overall", overall(scores))]
    return "\n".join(lines)
