"""From per-hop logits to action segments: softmax, smoothing, top-k and hysteresis.

A single hop's scores flicker; people want to be told once when an action starts and once
when it ends. Scores are averaged over the last few hops, and each class has two thresholds:
an action starts when its smoothed score rises to ``enter`` and ends only when it falls below
``exit``, so a score hovering near one threshold does not produce a storm of events.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from streamrec.config import PostprocessConfig
from streamrec.errors import StreamrecError


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * logits))  # tanh form: no overflow for large negative logits


# A model head's activation: softmax over exclusive classes (Kinetics), sigmoid over independent
# ones (AVA: a person may sit and talk at once). Named by the model config's head_activation.
ACTIVATIONS = {"softmax": softmax, "sigmoid": sigmoid}


@dataclass(frozen=True)
class ActionThresholds:
    """One stream's per-class thresholds, as its tracker applies them (read-only)."""

    labels: tuple[str, ...]
    enter: np.ndarray
    exit: np.ndarray
    trackable: np.ndarray  # False for background labels, which never start an action


@dataclass
class ActiveAction:
    label: str
    started_at: float  # source seconds (clip end of the hop that started it)
    peak_score: float
    onset: float  # source seconds: where the action most likely began (see `ActionTracker.update`)


@dataclass(frozen=True)
class ActionChange:
    """An ``action_start`` or ``action_end`` for the events stage to publish."""

    type: str
    label: str
    score: float
    started_at: float  # source seconds: the clip end of the hop that raised the action (an end: of its start)
    onset: float  # source seconds: where the action most likely began
    reason: str = ""  # for an end, why: see `END_REASONS`


# Why an action ended: its score fell below exit; its stream broke off (stalled, reopened, or
# frames missing); its stream ended; the run was stopped.
END_REASONS = ("score_fell", "stream_lost", "stream_ended", "stopped")


class ActionTracker:
    """The action state of one stream."""

    def __init__(self, labels: list[str], config: PostprocessConfig, activation: str = "softmax"):
        self.labels = labels
        self.config = config
        self.activation = ACTIVATIONS[activation]
        self.enter = np.full(len(labels), config.enter_threshold)
        self.exit = np.full(len(labels), config.exit_threshold)
        for name, threshold in config.thresholds.items():
            if name not in labels:
                raise StreamrecError(f"thresholds name unknown label '{name}'; labels are: {', '.join(labels)}")
            self.enter[labels.index(name)] = threshold.enter
            self.exit[labels.index(name)] = threshold.exit
        self.trackable = np.array([name not in config.background_labels for name in labels])
        self.thresholds = ActionThresholds(tuple(labels), self.enter, self.exit, self.trackable)
        self.history: deque[np.ndarray] = deque(maxlen=config.smoothing_hops)
        self.clip_starts: deque[float] = deque(maxlen=config.smoothing_hops)  # of the hops in ``history``
        self.active: dict[int, ActiveAction] = {}
        self.scores = np.zeros(len(labels))  # the latest smoothed scores
        self.probabilities = np.zeros(len(labels))  # the latest hop's own scores, before smoothing

    def update(self, logits: np.ndarray, time: float, clip_start: float | None = None) -> list[ActionChange]:
        """Feed one hop's logits (its clip ending at ``time`` and starting at ``clip_start`` source
        seconds, default ``time``); returns starts and ends.

        The smoothed score is the mean over the window's clips, so an action's ``onset`` (where it
        most likely began) is the mean of their starts: about (smoothing_hops - 1) / 2 hops before
        the start of the clip that raised it, the lag the smoothing adds.
        """
        self.probabilities = self.activation(logits.astype(np.float64))
        self.history.append(self.probabilities)
        self.clip_starts.append(time if clip_start is None else clip_start)
        self.scores = np.mean(self.history, axis=0)
        changes = []
        for index in list(self.active):
            action = self.active[index]
            action.peak_score = max(action.peak_score, float(self.scores[index]))
            if self.scores[index] < self.exit[index]:
                del self.active[index]
                changes.append(ActionChange("action_end", action.label, float(self.scores[index]), action.started_at,
                                            action.onset, "score_fell"))
        rising = np.flatnonzero(self.trackable & (self.scores >= self.enter))
        onset = float(np.mean(self.clip_starts))
        for index in rising[np.argsort(-self.scores[rising])]:
            if index not in self.active:
                self.active[index] = ActiveAction(self.labels[index], time, float(self.scores[index]), onset)
                changes.append(ActionChange("action_start", self.labels[index], float(self.scores[index]), time,
                                            onset))
        return changes

    def close(self, reason: str = "stream_ended") -> list[ActionChange]:
        """End every open action (``reason``: one of `END_REASONS`)."""
        changes = [ActionChange("action_end", a.label, float(self.scores[i]), a.started_at, a.onset, reason)
                   for i, a in self.active.items()]
        self.active.clear()
        return changes

    def restart(self, reason: str) -> list[ActionChange]:
        """End every open action and forget the smoothing history: the stream broke off, and what
        comes after the break must not be averaged with what came before."""
        changes = self.close(reason)
        self.history.clear()
        self.clip_starts.clear()
        self.scores = np.zeros(len(self.labels))
        self.probabilities = np.zeros(len(self.labels))
        return changes

    def active_since(self) -> dict[str, float]:
        """Each open action's label and start (source seconds)."""
        return {action.label: action.started_at for action in self.active.values()}

    def top_k(self) -> list[list]:
        """``[[label, score], ...]`` of the current smoothed scores, best first."""
        order = np.argsort(-self.scores)[: self.config.top_k]
        return [[self.labels[i], round(float(self.scores[i]), 4)] for i in order]
