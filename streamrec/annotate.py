"""Annotated frames: each stream's frames at source resolution with what the recognizer says
drawn on them, written to a video file and/or shown in a window.

Nothing here runs on the capture or inference threads beyond a hand-off: the frame tap puts
the frame in a bounded queue per stream (dropping and counting when it is full) and the hop
observer records an `Overlay` under a lock. One drawing thread per stream pairs, draws and
writes.

Which result goes on which frame: frame ``i`` shows the latest hop whose clip ends at or before
frame ``i``, which is what a live viewer knew when that frame was captured. Offline, the capture
thread runs up to a ring buffer ahead of inference, so a frame waits in its queue until a hop
ending at or after it has been seen (or the run is over); otherwise the labels would trail the
action by the ring buffer's length.

How deep the queue is: live, `LIVE_QUEUE_FRAMES`, enough for that wait (a hop plus inference)
with room to spare but shallow enough that a window shows what is happening now. Offline every
frame is wanted, so the queue may hold up to `OFFLINE_QUEUE_BYTES` of frames: a drawing thread
starved of CPU for a while catches up instead of skipping.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import cv2
import numpy as np

from streamrec.errors import StreamrecError

if TYPE_CHECKING:  # the pipeline (and its engines) is imported only by the command that runs it
    from streamrec.pipeline import HopResult, StreamStats

log = logging.getLogger(__name__)

LIVE_QUEUE_FRAMES = 64  # about 2 s of a 30 fps camera; also the least any queue holds
OFFLINE_QUEUE_BYTES = 512 * 2**20  # per stream: over 2000 frames at 320x240, 86 at 1080p
FPS_WINDOW_HOPS = 10  # processing fps is measured over the last this many hops
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")  # containers OpenCV writes with the mp4v codec
WINDOW_REFRESH_S = 0.02

TEXT = (255, 255, 255)  # BGR
DIM = (170, 170, 170)
BAR = (200, 120, 40)
ACTIVE = (0, 215, 255)  # amber: reads on dark and on red
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class Overlay:
    """What one hop said about a stream, drawn on the frames from its clip's end to the next hop's."""

    end_index: int  # the clip's newest frame
    top_k: list  # [[label, score], ...], best first
    active: list[tuple[str, float]]  # (label, seconds it has been active at this hop)
    fps: float | None  # source frames processed per wall-clock second over the last hops; None at the first
    latency_ms: float  # capture of the clip's newest frame → result, as the events report it
    # Per-person mode: each person seen at this hop, (track id, box in source pixels, top label and
    # score, active labels); their boxes are drawn where they were, labelled with who and what.
    people: tuple[tuple[int, tuple[float, float, float, float], tuple[str, float] | None, list[str]], ...] = ()


# --------------------------------------------------------------------------- drawing


def draw_overlay(frame_rgb: np.ndarray, stream_id: str, overlay: Overlay | None) -> np.ndarray:
    """A BGR copy of the frame: what was recognised in a panel at the top left, the stream's
    name and health in one at the bottom left, so the middle of the scene stays clear."""
    image = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    if overlay is None:
        _draw_panel(image, [("waiting for the first clip", DIM, None)], at_top=True)
        _draw_panel(image, [(stream_id, TEXT, None)], at_top=False)
        return image
    rows = [(f"{score:.2f} {label}", TEXT, score) for label, score in overlay.top_k]
    rows += [(f"ACTIVE {label} {seconds:.1f} s", ACTIVE, None) for label, seconds in overlay.active]
    for track_id, box, top, active in overlay.people:
        draw_person(image, track_id, box, top, active)
    if rows:
        _draw_panel(image, rows, at_top=True)
    fps = "--" if overlay.fps is None else f"{overlay.fps:.0f}"
    _draw_panel(image, [(f"{stream_id}  {fps} fps  latency {overlay.latency_ms:.0f} ms", TEXT, None)], at_top=False)
    return image


def draw_person(image: np.ndarray, track_id: int, box: tuple[float, float, float, float],
                 top: tuple[str, float] | None, active: list[str]) -> None:
    """A person's box, their track id and what they are doing (active actions, else the top label)."""
    height = image.shape[0]
    font_scale = max(0.3, 0.45 * height / 480)
    thickness = max(1, round(height / 480))
    x1, y1, x2, y2 = (round(v) for v in box)
    colour = ACTIVE if active else TEXT
    cv2.rectangle(image, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
    label = ", ".join(active) if active else (f"{top[0]} {top[1]:.2f}" if top else "")
    text = f"#{track_id} {label}".strip()
    (width, text_height), _ = cv2.getTextSize(text, FONT, font_scale, thickness)
    top_edge = max(0, y1 - text_height - 4)
    backing = image[top_edge:top_edge + text_height + 4, max(0, x1):max(0, x1) + width + 4]
    backing[:] = (backing * 0.4).astype(np.uint8)
    cv2.putText(image, text, (max(0, x1) + 2, top_edge + text_height + 1), FONT, font_scale, colour, thickness,
                cv2.LINE_AA)


def _draw_panel(image: np.ndarray, lines: list[tuple[str, tuple, float | None]], at_top: bool) -> None:
    """Lines of (text, colour, score bar or None) on a darkened box sized to fit them."""
    height = image.shape[0]
    font_scale = max(0.3, 0.55 * height / 480)
    thickness = max(1, round(height / 480))
    line_height = round(cv2.getTextSize("Ag", FONT, font_scale, thickness)[0][1] * 1.9)
    margin = max(2, line_height // 4)
    width = max(cv2.getTextSize(text, FONT, font_scale, thickness)[0][0] for text, _, _ in lines) + 2 * margin
    box_height = len(lines) * line_height + margin
    panel = image[:box_height, :width] if at_top else image[max(0, height - box_height):, :width]
    panel[:] = (panel * 0.4).astype(np.uint8)  # darken behind the text so it reads on any content
    for row, (text, colour, bar) in enumerate(lines):
        baseline = (row + 1) * line_height - margin
        cv2.putText(panel, text, (margin, baseline), FONT, font_scale, colour, thickness, cv2.LINE_AA)
        if bar is not None:  # the score as a bar under its line, full panel width = 1.0
            top = baseline + max(1, margin // 2)
            cv2.rectangle(panel, (margin, top), (margin + round(bar * (width - 2 * margin)), top + max(1, margin // 2)),
                          BAR, cv2.FILLED)


# --------------------------------------------------------------------------- per stream


class OverlayHistory:
    """One stream's overlays, in hop order, kept until the frames they belong to are drawn."""

    def __init__(self):
        self._overlays: deque[Overlay] = deque()
        self._changed = threading.Condition()
        self._finished = False

    def add(self, overlay: Overlay) -> None:
        with self._changed:
            self._overlays.append(overlay)
            self._changed.notify_all()

    def finish(self) -> None:
        """No more hops: frames still waiting take the last overlay."""
        with self._changed:
            self._finished = True
            self._changed.notify_all()

    def for_frame(self, index: int) -> Overlay | None:
        """The overlay of frame ``index``, waiting until a hop at or after it settles which one it is."""
        with self._changed:
            self._changed.wait_for(lambda: self._finished or (self._overlays and self._overlays[-1].end_index >= index))
            while len(self._overlays) > 1 and self._overlays[1].end_index <= index:
                self._overlays.popleft()  # frames only move forward: older overlays are done with
            if self._overlays and self._overlays[0].end_index <= index:
                return self._overlays[0]
            return None  # before the stream's first full clip


class StreamAnnotator(threading.Thread):
    """Draws one stream's frames and writes them to its video file and/or the window."""

    def __init__(self, stream_id: str, video_path: Path | None, window: Window | None):
        super().__init__(name=f"annotate-{stream_id}", daemon=True)
        self.stream_id = stream_id
        self.video_path = video_path
        self.window = window
        self.stats: Callable[[], StreamStats] | None = None  # offline or live, and the frame rate; set by start
        self.frames: queue.SimpleQueue = queue.SimpleQueue()  # bounded by offer(), its only producer
        self.queue_limit: int | None = None  # frames; set at the first frame
        self.overlays = OverlayHistory()
        self.progress: deque[tuple[float, int]] = deque(maxlen=FPS_WINDOW_HOPS)  # (wall time, end index)
        self.written = 0
        self.skipped = 0  # frames dropped because the queue was full

    def offer(self, index: int, frame: np.ndarray) -> None:
        """From the capture thread: queue the frame, or drop it if drawing has fallen behind."""
        if self.queue_limit is None:
            offline_limit = max(LIVE_QUEUE_FRAMES, OFFLINE_QUEUE_BYTES // frame.nbytes)
            self.queue_limit = offline_limit if self.stats().offline else LIVE_QUEUE_FRAMES
        if self.frames.qsize() >= self.queue_limit:
            self.skipped += 1
        else:
            self.frames.put((index, frame))

    def record(self, hop: HopResult) -> None:
        """From the pipeline thread, after a hop."""
        view, now = hop.view, time.monotonic()
        self.progress.append((now, view.end_index))
        (first_time, first_index), (last_time, last_index) = self.progress[0], self.progress[-1]
        fps = (last_index - first_index) / (last_time - first_time) if last_time > first_time else None
        active = [(label, view.clip_end - started_at) for label, started_at in hop.active.items()]
        people = tuple((p.track_id, p.box, tuple(p.top_k[0]) if p.top_k else None, sorted(p.active))
                       for p in hop.people or ())
        self.overlays.add(Overlay(view.end_index, hop.top_k, active, fps, (now - view.newest_capture_time) * 1000.0,
                                  people))

    def finish(self) -> None:
        """Draw what is queued with the last overlays, then stop (call after the pipeline has stopped)."""
        self.overlays.finish()
        self.frames.put(None)
        self.join()

    def run(self) -> None:
        writer = None
        try:
            while (item := self.frames.get()) is not None:
                index, frame = item
                image = draw_overlay(frame, self.stream_id, self.overlays.for_frame(index))
                if self.video_path:
                    if writer is None:
                        size = (image.shape[1], image.shape[0])
                        writer = self._open_writer(size)
                    writer.write(_fit(image, size))
                    self.written += 1
                if self.window:
                    self.window.show(self.stream_id, image)
        except Exception as exc:  # a broken writer must not take the run down; the summary says what was written
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "no message"
            log.error("annotating stream %s failed (%s: %s); no more frames are drawn", self.stream_id,
                      type(exc).__name__, reason)
            log.debug("where it failed", exc_info=True)
            while self.frames.get() is not None:  # keep taking frames, so neither capture nor finish() waits
                pass
        finally:
            if writer:
                writer.release()

    def _open_writer(self, size: tuple[int, int]) -> cv2.VideoWriter:
        writer = cv2.VideoWriter(str(self.video_path), cv2.VideoWriter_fourcc(*"mp4v"), self.stats().source_fps, size)
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write {self.video_path}")
        return writer


def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A video file keeps its first frame's size; a camera that reconnects at another resolution is scaled to it."""
    return image if (image.shape[1], image.shape[0]) == size else cv2.resize(image, size, interpolation=cv2.INTER_AREA)


# --------------------------------------------------------------------------- window


def display_problem() -> str | None:
    """Why no window can be opened here, or None if one probably can."""
    gui = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    if gui and gui.group(1).upper() == "NONE":
        return "headless OpenCV"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no DISPLAY or WAYLAND_DISPLAY"
    return None


class Window(threading.Thread):
    """One window per stream, showing its latest annotated frame. HighGUI wants every call from
    one thread, so the drawing threads only leave frames here."""

    def __init__(self):
        super().__init__(name="show", daemon=True)
        self._latest: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()

    def show(self, stream_id: str, image: np.ndarray) -> None:
        with self._lock:
            self._latest[stream_id] = image

    def close(self) -> None:
        self._closing.set()
        self.join()

    def run(self) -> None:
        try:
            while not self._closing.wait(WINDOW_REFRESH_S):
                with self._lock:
                    latest, self._latest = self._latest, {}
                for stream_id, image in latest.items():
                    cv2.imshow(f"streamrec {stream_id}", image)
                cv2.waitKey(1)
            cv2.destroyAllWindows()
        except cv2.error as exc:  # e.g. a display that refuses the connection; the frames are dropped
            log.warning("--show: cannot open a window (%s); continuing without it", str(exc).strip().splitlines()[-1])


# --------------------------------------------------------------------------- all streams


def video_paths(path: str | Path, stream_ids: list[str]) -> dict[str, Path]:
    """``FILE.mp4`` for one stream; ``FILE-<stream>.mp4`` each when there are several."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise StreamrecError(f"--output-video {path}: use a file name ending in {', '.join(VIDEO_SUFFIXES)}")
    if len(stream_ids) == 1:
        return {stream_ids[0]: path}
    return {s: path.with_name(f"{path.stem}-{_file_safe(s)}{path.suffix}") for s in stream_ids}


def _file_safe(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name)


class Annotator:
    """Annotated frames of every stream, to video files and/or a window: hand `frame_tap` and
    `observe` to the pipeline, `start` before running it and `close` after."""

    def __init__(self, stream_ids: list[str], paths: dict[str, Path], show: bool):
        """``paths``: the video file of each stream that is written (see `video_paths`)."""
        self.window = Window() if show else None
        self.streams = {s: StreamAnnotator(s, paths.get(s), self.window) for s in stream_ids}

    def frame_tap(self, stream_id: str, index: int, media_time: float, frame: np.ndarray) -> None:
        self.streams[stream_id].offer(index, frame)

    def observe(self, hop: HopResult) -> None:
        self.streams[hop.view.stream_id].record(hop)

    def start(self, stats: Callable[[], dict[str, StreamStats]]) -> None:
        """``stats``: the pipeline's figures (`Pipeline.stats`), which say whether a stream runs
        offline and, once its source has opened, its frame rate for the video file."""
        for stream in self.streams.values():
            stream.stats = lambda stream_id=stream.stream_id: stats()[stream_id]
            stream.start()
        if self.window:
            self.window.start()

    def close(self) -> None:
        for stream in self.streams.values():
            stream.finish()
            level = logging.WARNING if stream.skipped else logging.INFO
            skipped = f", skipped {stream.skipped} (drawing fell behind)" if stream.skipped else ""
            if stream.video_path:
                log.log(level, "annotated video %s: %d frames written%s", stream.video_path, stream.written, skipped)
            elif stream.skipped:
                log.log(level, "--show: stream %s%s", stream.stream_id, skipped)
        if self.window:
            self.window.close()
