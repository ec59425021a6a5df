"""People followed across hops: one `PersonTracker` per stream turns each hop's boxes into
track ids, ByteTrack's way (Zhang et al., 2022).

Every hop (`PersonTracker.update`):

1. each track's box is predicted to the hop's time by a Kalman filter: its centre at constant
   velocity, its size as detected (noise scaled by the box's height, as ByteTrack's; time in
   seconds, so a skipped hop is a longer step, not a lost one);
2. boxes scoring ``high_score`` or more are matched to the confirmed tracks, seen or missing,
   by IoU with the predicted box (at least ``match_iou``), both boxes widened by ``buffer`` of
   their size on every side first (C-BIoU, Yang et al., 2023): at a few hops a second a walker
   moves more than their own width, and unwidened boxes would not overlap; the confirmed tracks
   seen on the hop before and left unmatched then try the boxes left widened by ``wide_buffer``
   (C-BIoU's cascade of a small and a large buffer): someone who falls turns from a tall box into
   a wide one within a hop or two, and would otherwise start a new track halfway through the fall;
3. the lower-scoring boxes (a half-hidden person, a faint blob) are matched to the confirmed
   tracks seen on the hop before that are still unmatched (IoU at least ``low_match_iou``): they
   keep a track alive but never start one;
   In steps 2 and 3, when the boxes come with colour signatures (`streamrec.detection.appearance`)
   and ``appearance_weight`` is above 0, a pair's cost is ``1 - IoU`` plus that weight times the
   distance between the box's colours and the track's: among the pairs that overlap enough, two
   people whose boxes just crossed each take back their own track (DeepSORT's and BoT-SORT's use
   of appearance, with a colour histogram for their re-identification network). A track's
   signature follows its boxes slowly, and only boxes that overlap no other box of the hop
   teach it (a shared box holds someone else's colours too). The high-score boxes still left
   then go to the confirmed tracks that were already missing before this hop, by colours alone
   (at most ``reid_distance``) and only near where the track was last seen: someone who comes
   out from behind another person is where their coasting prediction is not, and would
   otherwise return under a new id (DeepSORT's re-identification of lost tracks);
4. tracks not yet confirmed take what high-score boxes are left (``match_iou``, widened); one
   left unmatched is dropped;
5. a high-score box still unmatched, scoring ``new_track_score`` or more, starts a tentative
   track. It is confirmed (started, and given its id) once matched on ``min_hits`` hops in a row;
6. a confirmed track unseen for more than ``max_missed_hops`` hops (or ``max_missed_s`` seconds,
   when set) ends. Until then it lives through the misses, predicted forward, and may be
   matched again.

Each update reports the tracks started, updated (seen again) and ended on that hop
(`TrackUpdate`), so that the pipeline can publish per-person starts and ends and close an
ended track's open actions at the time it was last seen. Ids count up from 1 per tracker and
are never given twice, not even after `PersonTracker.close`.

The assignments are solved by SciPy's ``linear_sum_assignment`` (an exact shortest augmenting
path solver in C++). SciPy is BSD-licensed, widely used and maintained, and has wheels for every
platform the project runs on, aarch64 (Jetson) included. ByteTrack itself uses ``lap``, a
smaller package for the same problem; at these sizes (tens of boxes) speed does not tell them
apart, and a hand-written solver would be one more thing to get right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from streamrec.detection import appearance
from streamrec.detection.boxes import Detections, iou_matrix, widen
from streamrec.detection.config import TrackerConfig

# Kalman filter noise, per unit of the box's height (ByteTrack's per-frame weights at 30 fps, per second).
POSITION_NOISE = 0.27  # process noise of the box, per second (variance grows with the step)
VELOCITY_NOISE = 1.0  # process noise of its velocity, per second
MEASUREMENT_NOISE = 0.05  # a detected box's error
INITIAL_VELOCITY = 2.0  # uncertainty of a new track's velocity (box heights a second)
SIGNATURE_KEEP = 0.9  # a track's colour signature keeps this much of itself per box that teaches it (BoT-SORT's)
ALONE_BELOW = 0.05  # a box overlapping no other box of its hop by this IoU or more teaches its track's signature
REID_REACH = 1.0  # a missing track's reach when taken back by colours: its height, and as much again per second
INFEASIBLE = 1e6  # assignment cost of a pair below the IoU bar: never chosen over a feasible one


@dataclass(frozen=True)
class Track:
    """A confirmed track as of one hop."""

    id: int
    box: np.ndarray  # float32 [4]: x1, y1, x2, y2 of its latest box, as detected
    score: float  # that box's score
    first_seen: float  # clip time (s) of its first box, tentative hops included
    last_seen: float  # clip time of its latest box
    hits: int  # hops it was matched on
    missed: int  # hops since it was last matched (0: on this hop)


@dataclass(frozen=True)
class TrackUpdate:
    """What one hop did to the confirmed tracks."""

    started: tuple[Track, ...] = ()  # confirmed on this hop: new person ids
    updated: tuple[Track, ...] = ()  # confirmed before and seen again on this hop
    ended: tuple[Track, ...] = ()  # unseen too long (or closed): their actions end at last_seen
    missing: tuple[Track, ...] = ()  # confirmed, alive, but not seen on this hop

    @property
    def seen(self) -> tuple[Track, ...]:
        """The tracks with a box on this hop (started and updated), by id."""
        return tuple(sorted(self.started + self.updated, key=lambda t: t.id))


@dataclass
class KalmanBox:
    """A box's centre and size, ``cx, cy, w, h``, and its centre's velocity per second, with their
    covariance. The size has no velocity: it follows the detections (a random walk), since a
    box that merges with another person's for one hop would otherwise grow without bound."""

    mean: np.ndarray  # float64 [6]
    covariance: np.ndarray  # float64 [6, 6]

    @staticmethod
    def start(box: np.ndarray) -> "KalmanBox":
        height = max(float(box[3] - box[1]), 1.0)
        std = np.array([2 * MEASUREMENT_NOISE] * 4 + [INITIAL_VELOCITY] * 2) * height
        return KalmanBox(np.r_[to_cxcywh(box), np.zeros(2)], np.diag(std ** 2))

    def predict(self, dt: float) -> None:
        if dt <= 0:
            return
        height = max(self.mean[3], 1.0)
        motion = np.eye(6)
        motion[0, 4] = motion[1, 5] = dt
        noise = np.diag([(POSITION_NOISE * height) ** 2] * 4 + [(VELOCITY_NOISE * height) ** 2] * 2) * dt
        self.mean = motion @ self.mean
        self.covariance = motion @ self.covariance @ motion.T + noise

    def correct(self, box: np.ndarray) -> None:
        measured = to_cxcywh(box)
        height = max(float(measured[3]), 1.0)
        projection = np.eye(4, 6)
        innovation_cov = projection @ self.covariance @ projection.T + np.eye(4) * (MEASUREMENT_NOISE * height) ** 2
        gain = np.linalg.solve(innovation_cov, projection @ self.covariance).T
        self.mean = self.mean + gain @ (measured - projection @ self.mean)
        self.covariance = (np.eye(6) - gain @ projection) @ self.covariance

    @property
    def box(self) -> np.ndarray:
        cx, cy, w, h = self.mean[:4]
        w, h = max(w, 1.0), max(h, 1.0)
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32)


def to_cxcywh(box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])


@dataclass(eq=False)  # compared and hashed as itself
class _Track:
    """A track as the tracker keeps it; id 0 until it is confirmed."""

    filter: KalmanBox
    box: np.ndarray
    score: float
    first_seen: float
    last_seen: float
    signature: np.ndarray | None = None  # colour signature, when boxes come with them
    id: int = 0
    hits: int = 1
    missed: int = 0

    @property
    def confirmed(self) -> bool:
        return self.id > 0

    def snapshot(self) -> Track:
        return Track(self.id, self.box.copy(), self.score, self.first_seen, self.last_seen, self.hits, self.missed)

    def match(self, box: np.ndarray, score: float, time_s: float, signature: np.ndarray | None) -> None:
        self.filter.correct(box)
        self.box, self.score, self.last_seen = box, score, time_s
        if signature is not None:
            self.signature = signature if self.signature is None else appearance.blend(
                self.signature, signature, SIGNATURE_KEEP)
        self.hits += 1
        self.missed = 0


class PersonTracker:
    """One stream's tracks; `update` once per hop with that hop's detections, in time order."""

    def __init__(self, config: TrackerConfig):
        self.config = config
        self._tracks: list[_Track] = []  # confirmed and tentative, alive
        self._next_id = 1
        self._time: float | None = None

    @property
    def ids_created(self) -> int:
        """Track ids given so far (confirmed tracks, ended ones included)."""
        return self._next_id - 1

    def tracks(self) -> list[Track]:
        """The confirmed tracks alive now, by id."""
        return sorted((t.snapshot() for t in self._tracks if t.confirmed), key=lambda t: t.id)

    def update(self, detections: Detections, time_s: float, signatures: np.ndarray | None = None) -> TrackUpdate:
        """Match one hop's boxes (at clip time ``time_s``) to the tracks; see the module docstring.
        ``signatures``: the boxes' colour signatures, row for row, if any."""
        config = self.config
        dt = 0.0 if self._time is None else max(0.0, time_s - self._time)
        self._time = time_s if self._time is None else max(self._time, time_s)
        for track in self._tracks:
            track.filter.predict(dt)
        boxes, scores = detections.boxes, detections.scores
        looks = Looks.of(boxes, signatures, config.appearance_weight)
        high = np.flatnonzero(scores >= config.high_score)
        low = np.flatnonzero(scores < config.high_score)
        confirmed = [t for t in self._tracks if t.confirmed]
        tentative = [t for t in self._tracks if not t.confirmed]
        seen_before = {t for t in confirmed if t.missed == 0}

        # 1. high-score boxes to every confirmed track
        pairs, unmatched, high = associate(confirmed, boxes, high, config.match_iou, config.buffer, looks)
        # ... then, widened further, to the tracks left that were seen on the hop before
        wide, _, high = associate([t for t in unmatched if t in seen_before], boxes, high, config.match_iou,
                                  config.wide_buffer, looks)
        pairs += wide
        widened = {track for track, _ in wide}
        unmatched = [t for t in unmatched if t not in widened]
        # 2. low-score boxes to the confirmed tracks left that were seen on the hop before
        recent = [t for t in unmatched if t in seen_before]
        pairs += associate(recent, boxes, low, config.low_match_iou, 0.0, looks)[0]
        # ... and the high-score boxes left to the confirmed tracks that went missing before this hop, by colours
        paired = {track for track, _ in pairs}
        lost = [t for t in unmatched if t not in seen_before and t not in paired]
        found_again, high = reidentify(lost, boxes, high, looks, config.reid_distance, time_s)
        pairs += found_again
        matched = {track for track, _ in pairs}
        # 3. the high-score boxes left to tentative tracks; a tentative track left unmatched is dropped
        tentative_pairs, dropped, high = associate(tentative, boxes, high, config.match_iou, config.buffer, looks)
        for track, index in pairs + tentative_pairs:
            track.match(boxes[index], float(scores[index]), time_s, looks.teaching(index))
        # 4. new tentative tracks
        fresh = [_Track(KalmanBox.start(boxes[i]), boxes[i], float(scores[i]), time_s, time_s, looks.teaching(i))
                 for i in high if scores[i] >= config.new_track_score]
        dropped = set(dropped)
        self._tracks = [t for t in self._tracks if t not in dropped] + fresh

        started, updated, ended, missing = [], [], [], []
        alive = []
        for track in self._tracks:
            if track.confirmed:
                if track in matched:
                    updated.append(track.snapshot())
                else:
                    track.missed += 1
                    if self._gone(track, time_s):
                        ended.append(track.snapshot())
                        continue
                    missing.append(track.snapshot())
            elif track.hits >= config.min_hits:
                track.id, self._next_id = self._next_id, self._next_id + 1
                started.append(track.snapshot())
            alive.append(track)
        self._tracks = alive
        return TrackUpdate(tuple(started), tuple(updated), tuple(ended), tuple(missing))

    def close(self) -> TrackUpdate:
        """End every track (the stream ended or broke off); ids go on counting from where they were."""
        ended = tuple(t.snapshot() for t in self._tracks if t.confirmed)
        self._tracks, self._time = [], None
        return TrackUpdate(ended=ended)

    def _gone(self, track: _Track, time_s: float) -> bool:
        if self.config.max_missed_s is not None:
            return time_s - track.last_seen > self.config.max_missed_s
        return track.missed > self.config.max_missed_hops


@dataclass(frozen=True)
class Looks:
    """One hop's colour signatures, as association uses them (none: association by boxes alone)."""

    signatures: np.ndarray | None  # float32 [K, appearance.SIZE], row for row with the hop's boxes
    weight: float  # of the colour distance in a pair's cost
    alone: np.ndarray | None  # bool [K]: boxes that overlap no other box of the hop

    @staticmethod
    def of(boxes: np.ndarray, signatures: np.ndarray | None, weight: float) -> "Looks":
        if signatures is None:
            return Looks(None, 0.0, None)
        overlap = iou_matrix(boxes, boxes)
        np.fill_diagonal(overlap, 0.0)
        return Looks(np.asarray(signatures, np.float32), weight, (overlap < ALONE_BELOW).all(axis=1))

    def teaching(self, index: int) -> np.ndarray | None:
        """Box ``index``'s signature if it may teach its track (it overlaps no other box)."""
        return None if self.signatures is None or not self.alone[index] else self.signatures[index]

    def cost(self, tracks: list[_Track], candidates: np.ndarray) -> np.ndarray | float:
        """The colour term of each (track, candidate box) pair's cost; 0 where a track has no signature yet."""
        if self.signatures is None or self.weight <= 0:
            return 0.0
        known = np.array([t.signature is not None for t in tracks])
        if not known.any():
            return 0.0
        own = np.stack([t.signature if t.signature is not None else np.zeros(appearance.SIZE, np.float32)
                        for t in tracks])
        return np.where(known[:, None], appearance.distance(own, self.signatures[candidates]), 0.0) * self.weight


def reidentify(tracks: list[_Track], boxes: np.ndarray, candidates: np.ndarray, looks: Looks, max_distance: float,
               time_s: float) -> tuple[list[tuple[_Track, int]], np.ndarray]:
    """Match tracks gone missing to the boxes at ``candidates`` by colours alone: a pair's colour
    distance at most ``max_distance``, and the box's centre within reach of where the track was
    last seen (REID_REACH of its height, plus as much again per second since). Lowest total
    distance first. Returns the pairs and the candidate indices left over."""
    if looks.signatures is None or max_distance <= 0 or not len(candidates):
        return [], candidates
    tracks = [t for t in tracks if t.signature is not None]
    if not tracks:
        return [], candidates
    colour = appearance.distance(np.stack([t.signature for t in tracks]), looks.signatures[candidates])
    last = np.stack([to_cxcywh(t.box) for t in tracks])
    centres = np.stack([to_cxcywh(b)[:2] for b in boxes[candidates]])
    reach = last[:, 3] * REID_REACH * (1.0 + np.array([time_s - t.last_seen for t in tracks]))
    near = np.linalg.norm(last[:, None, :2] - centres[None], axis=2) <= reach[:, None]
    feasible = near & (colour <= max_distance)
    rows, cols = linear_sum_assignment(np.where(feasible, colour, INFEASIBLE))
    pairs = [(tracks[r], int(candidates[c])) for r, c in zip(rows, cols) if feasible[r, c]]
    taken = {index for _, index in pairs}
    return pairs, np.array([i for i in candidates if i not in taken], np.int64)


def associate(tracks: list[_Track], boxes: np.ndarray, candidates: np.ndarray, min_iou: float, buffer: float,
              looks: Looks) -> tuple[list[tuple[_Track, int]], list[_Track], np.ndarray]:
    """Match ``tracks`` to the boxes at indices ``candidates`` by the IoU of each track's predicted
    box with each box, both widened by ``buffer``: as many pairs of at least ``min_iou`` as there
    can be, then the lowest total cost (``1 - IoU``, plus the colour term of ``looks``). Returns the
    pairs (track, box index), the tracks left over and the candidate indices left over."""
    if not tracks or not len(candidates):
        return [], list(tracks), candidates
    predicted = np.stack([t.filter.box for t in tracks])
    overlap = iou_matrix(widen(predicted, buffer), widen(boxes[candidates], buffer))
    cost = np.where(overlap >= min_iou, 1.0 - overlap + looks.cost(tracks, candidates), INFEASIBLE)
    rows, cols = linear_sum_assignment(cost)
    pairs = [(tracks[r], int(candidates[c])) for r, c in zip(rows, cols) if overlap[r, c] >= min_iou]
    paired_tracks = {track for track, _ in pairs}
    paired_boxes = {index for _, index in pairs}
    return (pairs, [t for t in tracks if t not in paired_tracks],
            np.array([i for i in candidates if i not in paired_boxes], np.int64))
