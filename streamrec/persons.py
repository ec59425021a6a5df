"""Per-person mode: who is doing what.

When a config has a ``detection:`` section, a stream is classified person by person, as
PySlowFast's AVA demo does, with tracks across hops:

1. `PersonStage` is what one engine call does: it finds people on each clip's keyframe (its
   middle Fast frame, as AVA labels keyframes) with the configured detector, then scores every
   box of every clip of the batch with the model's RoI head in one engine call. It runs on the
   engine's worker thread, so detection overlaps the pipeline's other work as inference does.
2. `StreamPeople`, one per stream on the pipeline's thread, associates each hop's boxes into
   tracks (`streamrec.detection.tracker`) and keeps an `ActionTracker` per track: smoothing and
   hysteresis per person and label, as for a whole frame, over the head's own activation
   (sigmoid for AVA-style heads: a person may do several things at once).

Boxes live in the model input's pixels until they are published; `SourceGeometry` maps them to
the source frame's pixels, which events and the annotated video use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamrec.backends import Engine
from streamrec.config import ClipConfig, PostprocessConfig
from streamrec.detection import Detections, Keyframe, PersonDetector, appearance
from streamrec.detection.config import TrackerConfig
from streamrec.detection.tracker import PersonTracker, Track, TrackUpdate
from streamrec.postprocess import ActionChange, ActionTracker
from streamrec.sampling import keyframe_position
from streamrec.scheduler import Batch
from streamrec.transforms import frame_fit


@dataclass(frozen=True)
class PersonRows:
    """One clip's people as the RoI head scored them, best detector score first."""

    boxes: np.ndarray  # float32 [K, 4]: x1, y1, x2, y2 in the model input's pixels
    scores: np.ndarray  # float32 [K]: the detector's
    logits: np.ndarray  # float32 [K, num_classes]: the head's, before its activation
    signatures: np.ndarray | None = None  # float32 [K, appearance.SIZE]: each box's colours, for the tracker


class PersonStage:
    """Detect people on each clip's keyframe, then classify every box in one engine call."""

    def __init__(self, detector: PersonDetector, engine: Engine, clip: ClipConfig, max_boxes: int, *,
                 colours: bool = True):
        self.detector = detector
        self.colours = colours  # compute each box's colour signature: the tracker reads them
        self.engine = engine
        self.clip = clip
        self.max_boxes = max_boxes  # per clip: the engine's own limit, best scores kept
        self.frames_input = "fast" if clip.alpha else "frames"
        self._seen_until: dict[str, float] = {}  # per stream: the clip time of the last frame shown to the detector

    def __call__(self, batch: Batch) -> list[PersonRows]:
        frames = batch.inputs[self.frames_input]  # [B, T, H, W, 3]
        middle = keyframe_position(self.clip)
        keyframes = []
        for row, view in enumerate(batch.views):
            times = np.linspace(view.clip_start, view.clip_end, self.clip.num_frames)
            self._show_background(view.stream_id, frames[row, :middle], times[:middle])
            keyframes.append(Keyframe(view.stream_id, frames[row, middle], float(times[middle])))
            self._seen_until[view.stream_id] = float(times[middle])
        found = [d if len(d) <= self.max_boxes else Detections(d.boxes[:self.max_boxes], d.scores[:self.max_boxes])
                 for d in self.detector.detect(keyframes)]
        rows = np.concatenate([np.column_stack([np.full(len(d), row, np.float32), d.boxes])
                               for row, d in enumerate(found)] or [np.zeros((0, 5), np.float32)])
        logits = self.engine.infer({**batch.inputs, "boxes": rows.astype(np.float32)})
        people, start = [], 0
        for keyframe, detections in zip(keyframes, found):
            signatures = appearance.signatures(keyframe.frame, detections.boxes) if self.colours else None
            people.append(PersonRows(detections.boxes, detections.scores, logits[start:start + len(detections)],
                                     signatures))
            start += len(detections)
        return people

    def forget(self, stream_id: str) -> None:
        """The stream broke off: its background starts afresh."""
        self._seen_until.pop(stream_id, None)
        self.detector.forget(stream_id)

    def _show_background(self, stream_id: str, frames: np.ndarray, times: np.ndarray) -> None:
        """A detector that models the background (motion) sees the clip's frames since the last
        keyframe it saw, not just one keyframe a hop: with a sparse feed its model lags the scene."""
        if self.detector.background_fps is None:
            return
        after = self._seen_until.get(stream_id, -np.inf)
        for frame, time in zip(frames, times):
            if time > after:
                self.detector.observe(stream_id, frame, float(time))


@dataclass(frozen=True)
class SourceGeometry:
    """Maps boxes between the model input's pixels and one stream's source frame (its region first)."""

    width: int  # the source frame's size
    height: int
    region: tuple[float, float, float, float] | None  # the part of it the stream looks at, as fractions
    clip: ClipConfig

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        left = top = 0.0
        width, height = self.width, self.height
        if self.region:
            x, y, w, h = self.region
            left, top = round(x * self.width), round(y * self.height)
            width, height = max(1, round(w * self.width)), max(1, round(h * self.height))
        fitted = frame_fit(width, height, self.clip.short_side, self.clip.crop_size, self.clip.fit)
        return fitted.to_source(boxes) + np.array([left, top, left, top], np.float32)


@dataclass(frozen=True)
class PersonChange:
    """An action start or end of one person (a track)."""

    track: Track
    change: ActionChange


@dataclass(frozen=True)
class PeopleHop:
    """What one hop of one stream did to its people."""

    tracks: TrackUpdate
    changes: tuple[PersonChange, ...]  # action starts and ends, ends of tracks that ended first
    top_k: dict[int, list[list]]  # each seen track's smoothed top labels
    active: dict[int, dict[str, float]]  # each live track's open actions: label -> start (source seconds)


class StreamPeople:
    """One stream's people: their tracks, and an action state per track."""

    def __init__(self, labels: list[str], postprocess: PostprocessConfig, tracker: TrackerConfig, activation: str):
        self.labels = labels
        self.postprocess = postprocess
        self.activation = activation  # the RoI head's (model.head_activation)
        self.tracker = PersonTracker(tracker)
        self.actions: dict[int, ActionTracker] = {}  # per live track id

    def hop(self, rows: PersonRows, time: float, clip_start: float | None = None) -> PeopleHop:
        """Feed one hop's scored boxes (its clip ending at ``time`` and starting at ``clip_start``
        source seconds, default ``time``)."""
        update = self.tracker.update(Detections(rows.boxes, rows.scores), time, rows.signatures)
        changes = self._end(update.ended, "person_left")
        top_k = {}
        for track in update.seen:
            row = _row_of(track.box, rows.boxes)
            actions = self.actions.get(track.id)
            if actions is None:
                actions = self.actions[track.id] = ActionTracker(self.labels, self.postprocess, self.activation)
            changes += [PersonChange(track, c) for c in actions.update(rows.logits[row], time, clip_start)]
            top_k[track.id] = actions.top_k()
        return PeopleHop(update, tuple(changes), top_k, self.active())

    def close(self, reason: str) -> tuple[TrackUpdate, list[PersonChange]]:
        """End every track and its open actions (the stream broke off, ended, or the run stops)."""
        update = self.tracker.close()
        return update, self._end(update.ended, reason)

    def active(self) -> dict[int, dict[str, float]]:
        return {track_id: actions.active_since() for track_id, actions in self.actions.items()}

    def _end(self, tracks: tuple[Track, ...], reason: str) -> list[PersonChange]:
        changes = []
        for track in tracks:
            actions = self.actions.pop(track.id, None)
            if actions is not None:
                changes += [PersonChange(track, c) for c in actions.close(reason)]
        return changes


def _row_of(box: np.ndarray, boxes: np.ndarray) -> int:
    """The row of ``boxes`` a track's box came from (the tracker hands back the detected box)."""
    return int(np.argmin(np.abs(boxes - box).sum(axis=1)))
