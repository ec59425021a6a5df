"""Score timeline: per-class scores over a run, with the thresholds, the emitted action
segments and (where known) the ground truth, one panel per stream.

`TimelineRecorder` is a hop observer for `Pipeline`; after the run, `write` draws the figure.
Times are source seconds at each hop's clip end (the ``clip_end`` of events), so a detected
segment starts when its ``action_start`` was raised: the gap to a ground-truth segment's start
is the detection delay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from streamrec.errors import StreamrecError, check_output_path
from streamrec.evaluation import Segment

if TYPE_CHECKING:  # the pipeline (and its engines) is imported only by the command that runs it
    from streamrec.pipeline import HopResult

MAX_CLASSES = 10  # beyond this many classes, plot those that mattered (detected, true, or highest peak)
DETECTED_BAND = (-0.10, -0.03)  # y range of the strip of detected segments under the scores
TRUTH_BAND = (-0.20, -0.13)


@dataclass
class StreamRecording:
    """What one stream's tracker said at every hop."""

    labels: list[str]
    enter: np.ndarray  # per-class thresholds, as the tracker applied them
    exit: np.ndarray
    trackable: np.ndarray  # False for background labels, which never start an action
    times: list[float] = field(default_factory=list)  # clip end of each hop
    scores: list[np.ndarray] = field(default_factory=list)  # smoothed scores of each hop
    ended: list[Segment] = field(default_factory=list)
    open: dict[str, float] = field(default_factory=dict)  # label → start of the actions active now
    # Per-person mode: each track's hops and its actions (label -> start while open; ended segments).
    tracks: dict[int, list[float]] = field(default_factory=dict)  # track id -> clip ends of the hops it was seen on
    track_open: dict[int, dict[str, float]] = field(default_factory=dict)
    track_ended: dict[int, list[Segment]] = field(default_factory=dict)

    def segments(self) -> list[Segment]:
        """Every emitted action, from its ``action_start``'s clip end to its ``action_end``'s; actions
        still open end at the last hop, as the pipeline closes them."""
        last = self.times[-1] if self.times else 0.0
        return self.ended + [Segment(start, last, label) for label, start in self.open.items()]


class TimelineRecorder:
    """A hop observer that keeps each stream's scores and action segments for `write`.
    A stream appears from its first hop on."""

    def __init__(self):
        self.streams: dict[str, StreamRecording] = {}

    def observe(self, hop: HopResult) -> None:
        view, thresholds = hop.view, hop.thresholds
        recording = self.streams.get(view.stream_id)
        if recording is None:
            recording = self.streams[view.stream_id] = StreamRecording(
                list(thresholds.labels), thresholds.enter.copy(), thresholds.exit.copy(), thresholds.trackable.copy())
        recording.times.append(view.clip_end)
        recording.scores.append(np.array(hop.scores, dtype=np.float64))
        if hop.people is not None:
            self._record_people(recording, hop)
        active = dict(hop.active)
        for label, start in recording.open.items():
            if active.get(label) != start:  # ended at this hop
                recording.ended.append(Segment(start, view.clip_end, label))
        recording.open = active

    @staticmethod
    def _record_people(recording: StreamRecording, hop: HopResult) -> None:
        now = hop.view.clip_end
        seen = {person.track_id: person for person in hop.people}
        for track_id in set(recording.track_open) | set(seen):
            active = dict(seen[track_id].active) if track_id in seen else {}
            for label, start in recording.track_open.get(track_id, {}).items():
                if active.get(label) != start:  # ended at this hop (or the person is gone)
                    recording.track_ended.setdefault(track_id, []).append(Segment(start, now, label))
            recording.track_open[track_id] = active
        for track_id in seen:
            recording.tracks.setdefault(track_id, []).append(now)

    def write(self, path: str | Path, ground_truth: dict[str, Sequence[Segment]] | None = None) -> None:
        """The figure, to ``path`` (any format matplotlib writes: .png, .svg, .pdf); ``ground_truth``
        maps a stream id to its true segments (as `evaluation.read_ground_truth` returns them)."""
        write_timeline(path, self.streams, ground_truth or {})


def write_timeline(path: str | Path, streams: dict[str, StreamRecording],
                   ground_truth: dict[str, Sequence[Segment]]) -> None:
    from matplotlib.figure import Figure  # not pyplot: no global backend, no display needed

    check_output_path(path, "--timeline")  # again at the end of the run: the path may have changed meanwhile
    figure = Figure(figsize=(12, 0.4 + 3.0 * max(1, len(streams))), layout="constrained")
    axes = figure.subplots(max(1, len(streams)), 1, squeeze=False)[:, 0]
    for ax, (name, recording) in zip(axes, streams.items()):
        _draw_stream(ax, name, recording, list(ground_truth.get(name, ())))
    if not streams:
        axes[0].text(0.5, 0.5, "no hops: every stream ended before its first full clip", ha="center",
                     transform=axes[0].transAxes)
    axes[-1].set_xlabel("source seconds (clip end)")
    try:
        figure.savefig(path, dpi=100)
    except OSError as exc:
        raise StreamrecError(f"cannot write --timeline {path}: {exc.strerror or exc}") from None


def _draw_people(ax, name: str, recording: StreamRecording) -> None:
    """Per-person mode: a lane per track, grey while the person is seen, coloured where they act."""
    ax.set_title(f"{name} (per person: {len(recording.tracks)} tracks)", loc="left", fontsize=10)
    colours = {label: _colour(k) for k, label in enumerate(recording.labels)}
    last = recording.times[-1] if recording.times else 0.0
    for lane, (track_id, seen) in enumerate(sorted(recording.tracks.items())):
        ax.plot(seen, [lane] * len(seen), "|", color="grey", markersize=6)
        segments = recording.track_ended.get(track_id, []) + [
            Segment(start, last, label) for label, start in recording.track_open.get(track_id, {}).items()]
        for segment in segments:
            ax.fill_between([segment.start, segment.end], lane - 0.3, lane + 0.3, color=colours[segment.label],
                            label=segment.label)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_yticks(range(len(recording.tracks)), [f"#{t}" for t in sorted(recording.tracks)])
    ax.set_ylabel("person (track)")
    ax.set_xlim(0, max(last, 1e-3))
    ax.grid(alpha=0.3, axis="x")


def _draw_stream(ax, name: str, recording: StreamRecording, truth: list[Segment]) -> None:
    if recording.tracks:
        _draw_people(ax, name, recording)
        return
    times, scores = np.array(recording.times), np.stack(recording.scores)
    detected = recording.segments()
    shown = _classes_to_show(recording, scores, detected, truth)
    some = f" ({len(shown)} of {len(recording.labels)} classes)" if len(shown) < len(recording.labels) else ""
    ax.set_title(name + some, loc="left", fontsize=10)
    colours = {recording.labels[i]: _colour(k) for k, i in enumerate(shown)}
    for i in shown:
        label = recording.labels[i]
        style = "-" if recording.trackable[i] else ":"  # background classes never start an action
        ax.plot(times, scores[:, i], style, color=colours[label], linewidth=1.2, label=label)
    _draw_thresholds(ax, recording, [i for i in shown if recording.trackable[i]], colours)
    for segment in detected:
        colour = colours.get(segment.label, "grey")
        ax.axvspan(segment.start, segment.end, color=colour, alpha=0.12, linewidth=0)
        ax.fill_between([segment.start, segment.end], *DETECTED_BAND, color=colour)
    for segment in truth:
        ax.fill_between([segment.start, segment.end], *TRUTH_BAND, color=colours.get(segment.label, "grey"),
                        hatch="///", alpha=0.7)
    bands = [("detected", DETECTED_BAND)] + ([("truth", TRUTH_BAND)] if truth else [])
    for name, (low, high) in bands:
        ax.text(1.002, (low + high) / 2, name, transform=ax.get_yaxis_transform(), va="center", fontsize=8)
    ax.set_ylim(bands[-1][1][0] - 0.02, 1.02)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_ylabel("smoothed score")
    ax.set_xlim(0, max([times[-1]] + [segment.end for segment in truth]))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.06, 1.0), fontsize=8, frameon=False)


def _classes_to_show(recording: StreamRecording, scores: np.ndarray, detected: list[Segment],
                     truth: list[Segment]) -> list[int]:
    """All classes if few; else those detected or true first, then the highest peaks."""
    if len(recording.labels) <= MAX_CLASSES:
        return list(range(len(recording.labels)))
    named = {segment.label for segment in detected + truth}
    by_peak = sorted(range(len(recording.labels)), key=lambda i: (recording.labels[i] not in named, -scores[:, i].max()))
    return sorted(by_peak[:MAX_CLASSES])


def _draw_thresholds(ax, recording: StreamRecording, classes: list[int], colours: dict[str, str]) -> None:
    """A grey line at the value most classes share; classes with their own value get a line in their colour."""
    if not classes:
        return
    for name, values, style in (("enter", recording.enter, "--"), ("exit", recording.exit, "-.")):
        distinct, counts = np.unique(values[classes], return_counts=True)
        shared = float(distinct[counts.argmax()])
        ax.axhline(shared, color="grey", linestyle=style, linewidth=0.9, label=f"{name} {shared:.2f}")
        for i in classes:
            if values[i] != shared:
                label = recording.labels[i]
                ax.axhline(values[i], color=colours[label], linestyle=style, linewidth=0.9,
                           label=f"{name} {values[i]:.2f} ({label})")


def _colour(k: int) -> str:
    return f"C{k % 10}"
