"""Which windows of a video training cuts, and their labels.

Streaming clips straddle action boundaries, so training windows do too: a window is labelled
by how much of it an action fills (`window_label`), and windows that are neither clearly the
action nor clearly background are not trained on.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from streamrec.config import ClipConfig
from streamrec.errors import StreamrecError
from streamrec.evaluation import Segment
from streamrec.sampling import clip_duration

POSITIVE_SHARE = 0.4  # an action filling this share of a window (or of itself, if shorter) labels it
BACKGROUND_SHARE = 0.15  # below this for every action, the window is background; in between, ambiguous
ACTION_WINDOW_RATE = 0.75  # in a video with background around its action, this share of windows shows the action
# ... and this share of those only partly (below FULL_SHARE): a stream sees the start and the end
# of an action first and last, and the model must be sure of it then for events to be on time.
PARTIAL_WINDOW_RATE = 0.4
FULL_SHARE = 0.9


class Video(Protocol):
    """A video the sampler can cut windows from: timestamps, labelled segments, frames by index."""

    @property
    def fps(self) -> float: ...

    @property
    def times(self) -> np.ndarray: ...

    @property
    def segments(self) -> list[Segment]: ...

    def frame(self, index: int) -> np.ndarray: ...


def action_share(segments: Sequence[Segment], start: float, end: float) -> tuple[str | None, float]:
    """The action filling most of the window ``[start, end]`` seconds, and its share.

    An action's share is its overlap with the window divided by the shorter of the two, so a
    fall shorter than a clip still labels the windows that contain most of it.
    """
    best, best_share = None, 0.0
    for segment in segments:
        overlap = max(0.0, min(end, segment.end) - max(start, segment.start))
        share = overlap / max(min(end - start, segment.duration), 1e-9)
        if share > best_share:
            best, best_share = segment.label, share
    return best, best_share


def window_label(segments: Sequence[Segment], start: float, end: float, background: str | None) -> str | None:
    """The label of the window ``[start, end]`` seconds, or None when it is ambiguous."""
    return label_for_share(*action_share(segments, start, end), background)


def label_for_share(label: str | None, share: float, background: str | None) -> str | None:
    """The action when it fills enough of the window, background when nothing does, else None."""
    if share >= POSITIVE_SHARE:
        return label
    return background if share < BACKGROUND_SHARE else None


def labelled_windows(video: Video, clip: ClipConfig,
                     background: str | None) -> tuple[np.ndarray, list[str | None], np.ndarray]:
    """Every window end a stream would serve (a full clip of history), its label and its action share."""
    times, length = video.times, clip_duration(clip)
    ends = np.flatnonzero(times >= times[0] + length - 1e-6)
    if ends.size == 0:  # a video shorter than a clip: its last frame, earlier frames repeated
        ends = np.array([len(times) - 1])
    found = [action_share(video.segments, times[e] - length, times[e]) for e in ends]
    labels = [label_for_share(label, share, background) for label, share in found]
    return ends, labels, np.array([share for _, share in found])


def choose_window(video: Video, clip: ClipConfig, background: str | None,
                  rng: np.random.Generator) -> tuple[int, str]:
    """A window end and its label: mostly on the action, often only partly (where a stream first and
    last sees it), else anywhere unambiguous."""
    ends, labels, shares = labelled_windows(video, clip, background)
    usable = [i for i, label in enumerate(labels) if label is not None]
    actions = [i for i in usable if labels[i] != background]
    pool = actions if actions and (rng.random() < ACTION_WINDOW_RATE or len(actions) == len(usable)) else usable
    if pool is actions and rng.random() < PARTIAL_WINDOW_RATE:
        pool = [i for i in actions if shares[i] < FULL_SHARE] or actions
    pick = pool[int(rng.integers(len(pool)))]
    return int(ends[pick]), labels[pick]  # type: ignore[return-value]


def centre_window(video: Video, clip: ClipConfig, background: str | None) -> tuple[int, str]:
    """The validation window: centred on the (first) action, or in the middle of a background video."""
    ends, labels, _ = labelled_windows(video, clip, background)
    times, half = video.times, clip_duration(clip) / 2
    segments = [s for s in video.segments if s.label != background]
    centre = (segments[0].start + segments[0].end) / 2 if segments else (times[0] + times[-1]) / 2
    pick = int(np.argmin(np.abs(times[ends] - half - centre)))
    label = labels[pick]
    if label is None:
        raise StreamrecError("internal: a centred validation window is ambiguous")
    return int(ends[pick]), label
