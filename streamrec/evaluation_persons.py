"""Per-person scoring: who did what, where and when, against ground truth with boxes.

Two scores, both pure functions on plain data:

- **Frame-level AP** (`frame_average_precision`), as AVA defines it (the official ActivityNet
  ``ava`` evaluation, PASCAL VOC AP at IoU 0.5): on each keyframe, every detection is a
  (box, label, score); per class, a keyframe's detections are taken best score first, each
  claims the ground-truth box of its class it overlaps most, and is a hit when that IoU is at
  least 0.5 and the box was not claimed before (otherwise a false positive: it does not fall
  back to another box). Over all keyframes, detections are ranked by score into a
  precision/recall curve, and AP is the area under its upper envelope (VOC's all-point
  interpolation). Classes with no ground truth have no AP and stay out of the mean (`mean_ap`).
  A detection on a keyframe without ground truth is a false positive. The official code walks
  a keyframe's detections in the order given; taking them best first makes the score
  independent of that order and equals it whenever detections come sorted, as detectors emit
  them. Keyframes are `KEYFRAME_HZ` a second (AVA: 1): the procedural actions last 0.7-3.4 s,
  and at 2 Hz every one of them lies on a keyframe.
- **Per-person event F1** (`score_person_events`): a predicted action (a track's label from
  start to end) hits a true one (a person's labelled segment) when the labels are equal, their
  temporal IoU is at least 0.5, and the track was on that person: `box_overlap`, the mean box
  IoU of the track's samples within the two segments' common span against the person's box at
  the same moments, is at least 0.5. Pairs are matched one to one, best temporal IoU first (as
  `streamrec.evaluation.match_segments`). Counts and delays per class come back as
  `streamrec.evaluation.ClassScore`, so `overall`, `combine`, `report` and `format_table` apply;
  a hit's delay is from the true start to the prediction's ``detected_at`` (its
  ``action_start`` event).

Ground-truth files (``video.json`` next to ``video.mp4``, `streamrec.evaluation.ground_truth_path`)
for videos with several people, as `write_person_truth` writes them:

    {"format": "streamrec-person-truth/1", "fps": 25, "frames": 1500, "width": 320, "height": 240,
     "duration_s": 60.0, "background_label": "standing still", ...other facts about the video...,
     "people": [0, 1, 2],
     "person_segments": [[start_s, end_s, label, person], ...],
     "boxes": [[[person, x1, y1, x2, y2, label, occluded], ...], ...]}

``boxes`` has one list per frame (frame ``i`` at ``i / fps`` seconds) with a row per visible
person: box corners in frame pixels (pixel ``j`` spans ``[j, j + 1)``, as
`streamrec.detection.boxes`), the person's label at that moment, and ``occluded``, the share of
the person's drawn pixels hidden by people in front (0 to 1). ``person_segments`` are the labelled
actions while the person is visible (the background label is implicit, as in
`streamrec.evaluation`). People are integer ids.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from streamrec.config import ClipConfig
from streamrec.detection import Detections, Keyframe, PersonDetector
from streamrec.detection.boxes import clip_to_frame, iou_matrix
from streamrec.errors import StreamrecError
from streamrec.evaluation import (IOU_THRESHOLD, ClassScore, check_truth_label, predicted_span, temporal_iou,
                                  truth_row, truth_span)

TRUTH_FORMAT = "streamrec-person-truth/1"
KEYFRAME_HZ = 2.0
BOX_IOU_THRESHOLD = 0.5

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels


# --------------------------------------------------------------------------- plain data


@dataclass(frozen=True)
class PersonBox:
    """One person on one frame: where, doing what, how hidden."""

    person: int
    box: Box
    label: str
    occluded: float = 0.0  # share of the person's drawn pixels hidden by people in front


@dataclass(frozen=True)
class PersonSegment:
    """A person's (or a track's) action from start to end, in source seconds."""

    start: float
    end: float
    label: str
    person: int  # actor id in ground truth, track id in predictions
    detected_at: float | None = None  # predictions only: source time of the action_start event

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Where one person's (or track's) box was: ``boxes[k]`` at ``times[k]``, times increasing.

    A sample stands for the moments within ``reach_s`` of it: half a frame for ground truth,
    so that between samples (and while the person is out of sight) there is no box.
    """

    times: np.ndarray  # float64 [K], seconds
    boxes: np.ndarray  # float64 [K, 4]
    reach_s: float = math.inf

    @staticmethod
    def of(samples: Iterable[tuple[float, Sequence[float]]], reach_s: float = math.inf) -> "Trajectory":
        """From ``(time, box)`` pairs in any order."""
        rows = sorted((float(t), tuple(float(v) for v in box)) for t, box in samples)
        times = np.array([t for t, _ in rows], np.float64)
        boxes = np.array([b for _, b in rows], np.float64).reshape(-1, 4)
        return Trajectory(times, boxes, reach_s)

    def box_at(self, time: float) -> np.ndarray | None:
        """The box of the sample nearest ``time`` if it is within reach (a nanosecond's slack, so that
        a moment half a frame from a frame still finds it through rounding), else None."""
        if not len(self.times):
            return None
        k = int(np.searchsorted(self.times, time))
        nearest = min((i for i in (k - 1, k) if 0 <= i < len(self.times)), key=lambda i: abs(self.times[i] - time))
        return self.boxes[nearest] if abs(self.times[nearest] - time) <= self.reach_s + 1e-9 else None

    def samples_within(self, start: float, end: float) -> list[int]:
        """Indices of the samples timed in ``[start, end]``; if none, the one nearest the middle (if any)."""
        inside = np.flatnonzero((self.times >= start) & (self.times <= end))
        if inside.size or not len(self.times):
            return [int(i) for i in inside]
        return [int(np.argmin(np.abs(self.times - (start + end) / 2)))]


@dataclass(frozen=True)
class BoxDetection:
    """One scored guess on a keyframe: this box does ``label`` with confidence ``score``."""

    box: Box
    label: str
    score: float


@dataclass(frozen=True)
class PersonTruth:
    """A video's ground truth for several people (see the module docstring for the file)."""

    fps: float
    width: int
    height: int
    frames: tuple[tuple[PersonBox, ...], ...]  # per frame, every visible person
    segments: tuple[PersonSegment, ...]
    background_label: str
    info: dict[str, Any] = field(default_factory=dict)  # everything else the file records

    @property
    def people(self) -> list[int]:
        return sorted({p.person for frame in self.frames for p in frame} | {s.person for s in self.segments})

    def keyframes(self, rate_hz: float = KEYFRAME_HZ, start_s: float = 0.0) -> list[int]:
        """Frame indices nearest to ``start_s``, ``start_s + 1 / rate_hz``, ... within the video."""
        if rate_hz <= 0:
            raise StreamrecError(f"keyframe rate {rate_hz} Hz is not positive; use e.g. {KEYFRAME_HZ}")
        indices, k = [], 0
        while (index := math.floor((start_s + k / rate_hz) * self.fps + 0.5)) < len(self.frames):
            if index >= 0 and (not indices or index != indices[-1]):
                indices.append(index)
            k += 1
        return indices

    def keyframe_truth(self, rate_hz: float = KEYFRAME_HZ, start_s: float = 0.0) -> dict[int, tuple[PersonBox, ...]]:
        """The truth `frame_average_precision` wants: keyframe index -> its people (empty frames included)."""
        return {i: self.frames[i] for i in self.keyframes(rate_hz, start_s)}

    def trajectories(self) -> dict[int, Trajectory]:
        """Each person's box on every frame they are visible, each frame standing for half a frame either side."""
        samples: dict[int, list[tuple[float, Box]]] = {}
        for index, frame in enumerate(self.frames):
            for p in frame:
                samples.setdefault(p.person, []).append((index / self.fps, p.box))
        return {person: Trajectory.of(rows, reach_s=0.5 / self.fps) for person, rows in samples.items()}


# --------------------------------------------------------------------------- files


def write_person_truth(path: str | Path, truth: PersonTruth) -> None:
    facts = {"format": TRUTH_FORMAT, "fps": truth.fps, "frames": len(truth.frames), "width": truth.width,
             "height": truth.height, "background_label": truth.background_label, **truth.info, "people": truth.people}
    segments = [[round(s.start, 4), round(s.end, 4), s.label, s.person] for s in truth.segments]
    boxes = [[[p.person, *(round(v, 2) for v in p.box), p.label, round(p.occluded, 3)] for p in frame]
             for frame in truth.frames]

    def rows(values: list) -> str:  # one row per line: readable, and a diff shows which rows changed
        return "[" + ",".join("\n  " + json.dumps(v, separators=(",", ":")) for v in values) + "\n ]"

    lines = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in facts.items()]
    lines += [f' "person_segments": {rows(segments)}', f' "boxes": {rows(boxes)}']
    Path(path).write_text("{\n" + ",\n".join(lines) + "\n}\n")


def read_person_truth(path: str | Path, labels: Sequence[str] | None = None) -> PersonTruth:
    """A per-person ground-truth file, each segment and box checked as `streamrec.evaluation.read_ground_truth`
    checks segments (times, labels, with ``labels`` the model's own), and each person an integer id."""
    path = Path(path)
    if not path.is_file():
        raise StreamrecError(f"no ground truth {path}; write one with python -m streamrec.procedural_group or put "
                             "a person ground-truth JSON file (see streamrec.evaluation_persons) next to the video")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise StreamrecError(f"ground truth {path} is not JSON ({exc}); rewrite it") from None
    if not isinstance(data, dict) or data.get("format") != TRUTH_FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise StreamrecError(f"ground truth {path} has format {found!r}, not {TRUTH_FORMAT!r}: it is not per-person "
                             "ground truth; use a video written by python -m streamrec.procedural_group")
    labels = None if labels is None else list(labels)
    try:
        for key in ("boxes", "person_segments"):
            if not isinstance(data[key], list):
                raise TypeError(f"{key!r} is not a list")
        frames = tuple(tuple(_person_box(path, f"boxes[{f}][{k}]", row, labels) for k, row in enumerate(frame))
                       for f, frame in enumerate(data["boxes"]))
        segments = tuple(_person_segment(path, f"person_segments[{i}]", row, labels)
                         for i, row in enumerate(data["person_segments"]))
        known = {"format", "fps", "frames", "width", "height", "background_label", "people", "person_segments", "boxes"}
        truth = PersonTruth(float(data["fps"]), int(data["width"]), int(data["height"]), frames, segments,
                            str(data["background_label"]), {k: v for k, v in data.items() if k not in known})
        declared = int(data["frames"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StreamrecError(f"ground truth {path} is not valid ({type(exc).__name__}: {exc}); see "
                             "streamrec.evaluation_persons for the format") from None
    check_truth_label(path, "background_label", truth.background_label, labels)
    if len(truth.frames) != declared:
        raise StreamrecError(f"ground truth {path} says {declared} frames but boxes lists {len(truth.frames)}; "
                             "rewrite it")
    return truth


def _person_id(path: Path, where: str, label: Any, person: Any) -> int:
    if not isinstance(person, int) or isinstance(person, bool):
        about = f"{where} ({json.dumps(label)})" if isinstance(label, str) else where
        raise StreamrecError(f"ground truth {path} is not valid: {about} has person {person!r}; people are integer ids (0, 1, ...)")
    return person


def _person_segment(path: Path, where: str, row: Any, labels: Sequence[str] | None) -> PersonSegment:
    start, end, label, person = truth_row(path, where, row, ("start", "end", "label", "person"))
    start, end = truth_span(path, where, label, start, end)
    check_truth_label(path, where, label, labels)
    return PersonSegment(start, end, label, _person_id(path, where, label, person))


def _person_box(path: Path, where: str, row: Any, labels: Sequence[str] | None) -> PersonBox:
    person, x1, y1, x2, y2, label, occluded = truth_row(path, where, row,
                                                        ("person", "x1", "y1", "x2", "y2", "label", "occluded"))
    about = f"{where} ({json.dumps(label)})" if isinstance(label, str) else where
    box = []
    for name, value in (("x1", x1), ("y1", y1), ("x2", x2), ("y2", y2)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise StreamrecError(f"ground truth {path} is not valid: {about} has {name} {value!r}; box corners are finite numbers "
                                 "in frame pixels")
        box.append(float(value))
    if (not isinstance(occluded, (int, float)) or isinstance(occluded, bool)
            or not 0 <= occluded <= 1):  # also refuses nan
        raise StreamrecError(f"ground truth {path} is not valid: {about} has occluded {occluded!r}; it is the share of the person "
                             "hidden, from 0 to 1")
    check_truth_label(path, where, label, labels)
    return PersonBox(_person_id(path, where, label, person), tuple(box), label, float(occluded))


# --------------------------------------------------------------------------- frame-level AP


def average_precision(scores: Sequence[float], hits: Sequence[bool], num_truth: int) -> float:
    """PASCAL VOC AP (all-point interpolation) of detections ranked by score against ``num_truth`` true boxes.

    The area under the precision/recall curve with each precision raised to the best precision
    at any higher recall; ties in score keep the order given. ``num_truth`` must be positive.
    """
    if num_truth <= 0:
        raise ValueError("average precision needs at least one true box")
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    hit = np.asarray(hits, bool)[order]
    true_positives = np.cumsum(hit)
    precision = true_positives / np.arange(1, len(hit) + 1)
    recall = true_positives / num_truth
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(steps * envelope))


def keyframe_hits(truth: Sequence[PersonBox], detections: Sequence[BoxDetection], label: str,
                  iou_threshold: float = IOU_THRESHOLD) -> tuple[list[float], list[bool]]:
    """One keyframe, one class: each valid detection's score and whether it is a hit (AVA's rule)."""
    boxes = np.array([p.box for p in truth if p.label == label], np.float64).reshape(-1, 4)
    mine = sorted((d for d in detections if d.label == label and d.box[0] < d.box[2] and d.box[1] < d.box[3]),
                  key=lambda d: -d.score)
    if not mine:
        return [], []
    overlaps = iou_matrix(np.array([d.box for d in mine]), boxes) if len(boxes) else np.zeros((len(mine), 0))
    claimed = np.zeros(len(boxes), bool)
    hits = []
    for row in overlaps:
        best = int(np.argmax(row)) if row.size else -1
        hit = best >= 0 and row[best] >= iou_threshold and not claimed[best]
        if hit:
            claimed[best] = True
        hits.append(bool(hit))
    return [d.score for d in mine], hits


def frame_average_precision(truth: Mapping[Hashable, Sequence[PersonBox]],
                            detections: Mapping[Hashable, Sequence[BoxDetection]],
                            labels: Iterable[str] | None = None,
                            iou_threshold: float = IOU_THRESHOLD) -> dict[str, float]:
    """AP per class over keyframes (keys: anything naming a keyframe, e.g. ``(video, frame index)``).

    ``truth`` lists every keyframe scored, empty ones too; ``labels`` are the classes scored
    (default: every label in the truth). Classes without a true box on any keyframe are left
    out. See the module docstring for the matching rule.
    """
    counts: dict[str, int] = {}
    for people in truth.values():
        for p in people:
            counts[p.label] = counts.get(p.label, 0) + 1
    scored = [name for name in (labels if labels is not None else sorted(counts)) if counts.get(name)]
    result = {}
    for label in scored:
        scores: list[float] = []
        hits: list[bool] = []
        for key, found in detections.items():
            s, h = keyframe_hits(truth.get(key, ()), found, label, iou_threshold)
            scores += s
            hits += h
        result[label] = average_precision(scores, hits, counts[label])
    return result


def mean_ap(per_class: Mapping[str, float]) -> float | None:
    """The mean over the classes that have an AP (those with ground truth); None when there are none."""
    return float(np.mean(list(per_class.values()))) if per_class else None


# --------------------------------------------------------------------------- per-person events


def box_overlap(predicted: PersonSegment, track: Trajectory, truth: PersonSegment, person: Trajectory) -> float:
    """How well the track followed the person while both segments ran: the mean IoU, over the track's
    samples timed within the segments' common span (or the one nearest its middle when none
    is), of the track's box with the person's box at that moment (0 where the person has none)."""
    start, end = max(predicted.start, truth.start), min(predicted.end, truth.end)
    samples = track.samples_within(start, end) if end >= start else []
    if not samples:
        return 0.0
    overlaps = []
    for k in samples:
        true_box = person.box_at(float(track.times[k]))
        overlaps.append(0.0 if true_box is None else float(iou_matrix(track.boxes[k], true_box)[0, 0]))
    return float(np.mean(overlaps))


def match_person_segments(truth: Sequence[PersonSegment], truth_tracks: Mapping[int, Trajectory],
                          predicted: Sequence[PersonSegment], predicted_tracks: Mapping[int, Trajectory],
                          iou_threshold: float = IOU_THRESHOLD,
                          box_iou_threshold: float = BOX_IOU_THRESHOLD) -> list[tuple[PersonSegment, PersonSegment]]:
    """One-to-one (truth, prediction) pairs of equal labels with temporal IoU >= ``iou_threshold`` and
    `box_overlap` >= ``box_iou_threshold``, highest temporal IoU first (then highest overlap)."""
    empty = Trajectory.of([])
    candidates = []
    for i, t in enumerate(truth):
        for j, p in enumerate(predicted):
            if t.label != p.label:
                continue
            iou = temporal_iou(t, p)  # reads only start and end
            if iou < iou_threshold:
                continue
            overlap = box_overlap(p, predicted_tracks.get(p.person, empty), t, truth_tracks.get(t.person, empty))
            if overlap >= box_iou_threshold:
                candidates.append((-iou, -overlap, i, j))
    used_truth, used_predicted, pairs = set(), set(), []
    for _, _, i, j in sorted(candidates):
        if i not in used_truth and j not in used_predicted:
            used_truth.add(i)
            used_predicted.add(j)
            pairs.append((truth[i], predicted[j]))
    return pairs


def score_person_events(truth: Sequence[PersonSegment], truth_tracks: Mapping[int, Trajectory],
                        predicted: Sequence[PersonSegment], predicted_tracks: Mapping[int, Trajectory],
                        labels: Iterable[str], iou_threshold: float = IOU_THRESHOLD,
                        box_iou_threshold: float = BOX_IOU_THRESHOLD) -> dict[str, ClassScore]:
    """Per-class hits, misses, false alarms and delays for one video.

    ``truth_tracks`` maps each person to their `Trajectory` (`PersonTruth.trajectories`);
    ``predicted_tracks`` maps each track id to the boxes the tracker gave it. ``labels`` are
    the classes scored (others are ignored).
    """
    scores = {}
    for label in labels:
        t = [s for s in truth if s.label == label]
        p = [s for s in predicted if s.label == label]
        pairs = match_person_segments(t, truth_tracks, p, predicted_tracks, iou_threshold, box_iou_threshold)
        delays = tuple(pred.detected_at - true.start for true, pred in pairs if pred.detected_at is not None)
        scores[label] = ClassScore(len(pairs), len(p) - len(pairs), len(t) - len(pairs), delays)
    return scores


@dataclass(frozen=True)
class Identity:
    """How well tracks kept to people, as MOT's CLEAR figures count it, on the hops' keyframes:
    at each, people and tracks are paired one to one by IoU (at least 0.5, highest total first)."""

    person_hops: int  # (person, hop) pairs where the person is on screen
    covered: int  # ... of them with a track's box on the person
    switches: int  # times a person's track differed from the one that covered them before (MOT's IDSW)
    tracks: int  # track ids given

    @property
    def coverage(self) -> float:
        return self.covered / self.person_hops if self.person_hops else 0.0

    def __add__(self, other: "Identity") -> "Identity":
        return Identity(self.person_hops + other.person_hops, self.covered + other.covered,
                        self.switches + other.switches, self.tracks + other.tracks)


def identity(truth_tracks: Mapping[int, Trajectory], predicted_tracks: Mapping[int, Trajectory],
             moments: Iterable[float] = ()) -> Identity:
    """`Identity` of one video's tracks (``predicted_tracks``: each track's boxes at its hops'
    keyframes) against its people (`PersonTruth.trajectories`). ``moments``: every hop's keyframe
    time (`PersonPredictions.keyframes`), so that people on a keyframe where no track was published
    count as uncovered; the tracks' own times alone would leave those hops out."""
    tracked = {float(t) for track in predicted_tracks.values() for t in track.times}
    moments = sorted(tracked | {float(t) for t in moments})
    track_ids = list(predicted_tracks)
    last: dict[int, int] = {}
    person_hops = covered = switches = 0
    for moment in moments:
        people = [(person, box) for person, trajectory in truth_tracks.items()
                  if (box := trajectory.box_at(moment)) is not None]
        person_hops += len(people)
        present = [(track, predicted_tracks[track].boxes[k[0]]) for track in track_ids
                   if len(k := np.flatnonzero(predicted_tracks[track].times == moment))]
        if not people or not present:
            continue
        overlap = iou_matrix(np.array([b for _, b in people]), np.array([b for _, b in present]))
        rows, cols = linear_sum_assignment(-overlap)
        for r, c in zip(rows, cols):
            if overlap[r, c] < BOX_IOU_THRESHOLD:
                continue
            person, track = people[r][0], present[c][0]
            covered += 1
            switches += int(person in last and last[person] != track)
            last[person] = track
    return Identity(person_hops, covered, switches, len(track_ids))


# --------------------------------------------------------------------------- from the pipeline's events


@dataclass(frozen=True)
class PersonPredictions:
    """What a per-person run published for one video, in the scorers' terms."""

    segments: tuple[PersonSegment, ...]  # each track's actions
    tracks: dict[int, Trajectory]  # each track's boxes, at its hops' keyframes
    # Every hop's (keyframe time, every box's labels and scores), hops without a box included.
    keyframes: tuple[tuple[float, tuple[BoxDetection, ...]], ...]


class TruthDetector(PersonDetector):
    """The ground truth's boxes as a detector's (score 1): per-person mode with perfect boxes, to
    tell what the classifier and tracker lose from what the detector does (AVA papers report
    both). ``truth``: each stream's ground truth, by stream id."""

    name = "ground truth"

    def __init__(self, truth: Mapping[str, PersonTruth], clip: ClipConfig):
        self.truth, self.clip = dict(truth), clip

    def detect_one(self, keyframe: Keyframe) -> Detections:
        from streamrec.transforms import frame_fit

        truth = self.truth[keyframe.stream_id]
        index = min(len(truth.frames) - 1, max(0, math.floor(keyframe.time_s * truth.fps + 0.5)))
        people = truth.frames[index]
        if not people:
            return Detections.empty()
        fit = frame_fit(truth.width, truth.height, self.clip.short_side, self.clip.crop_size, self.clip.fit)
        height, width = keyframe.frame.shape[:2]
        boxes = clip_to_frame(fit.to_input(np.array([p.box for p in people], np.float32)), width, height)
        return Detections.of(boxes, np.ones(len(people), np.float32))


def predictions_from_events(events: Iterable[Mapping[str, Any]]) -> PersonPredictions:
    """One stream's ``action_start``/``action_end`` and ``prediction`` events (a per-person run with
    ``events.predictions``) as scorer input.

    An action runs where `streamrec.evaluation.predicted_span` places it, as whole-frame segments
    do. A hop's boxes were found on its clip's keyframe, the middle of the clip; each box is a
    detection of every label in its ``topk``, scored by that label's smoothed score.
    """
    open_actions: dict[tuple[int, str], Mapping[str, Any]] = {}
    segments, samples, keyframes = [], {}, []
    for event in events:
        kind = event["type"]
        if kind == "action_start":
            open_actions[(event["track_id"], event["label"])] = event
        elif kind == "action_end" and (event["track_id"], event["label"]) in open_actions:
            start = open_actions.pop((event["track_id"], event["label"]))
            segments.append(PersonSegment(*predicted_span(start, event), event["label"], event["track_id"],
                                          detected_at=start["clip_end"]))
        elif kind == "prediction" and "persons" in event:
            moment = (event["clip_start"] + event["clip_end"]) / 2
            found = []
            for person in event["persons"]:
                samples.setdefault(person["track_id"], []).append((moment, person["box"]))
                found += [BoxDetection(tuple(person["box"]), label, score) for label, score in person["topk"]]
            keyframes.append((moment, tuple(found)))
    tracks = {track: Trajectory.of(points) for track, points in samples.items()}
    return PersonPredictions(tuple(segments), tracks, tuple(keyframes))


def detections_at_keyframes(truth: PersonTruth, predictions: PersonPredictions,
                            start_s: float = 0.0) -> tuple[dict[Hashable, tuple[PersonBox, ...]],
                                                           dict[Hashable, tuple[BoxDetection, ...]]]:
    """Ground truth and detections on the truth's keyframes (from ``start_s``), each keyframe's
    detections from the hop whose keyframe is nearest it: input for `frame_average_precision`."""
    truth_at = truth.keyframe_truth(start_s=start_s)
    moments = np.array([moment for moment, _ in predictions.keyframes])
    detections = {}
    for index in truth_at:
        if len(moments):
            detections[index] = predictions.keyframes[int(np.argmin(np.abs(moments - index / truth.fps)))][1]
    return truth_at, detections
