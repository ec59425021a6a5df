"""``run``'s flags for looking rather than reading JSON: ``--output-video``, ``--show`` and
``--timeline``, turned into the pipeline's hop observers and frame taps (see `annotate` and
`timeline` for what they draw)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import cv2

from streamrec.annotate import Annotator, display_problem, video_paths
from streamrec.capture import FrameTap
from streamrec.config import Config
from streamrec.errors import StreamrecError, check_figure_path, check_output_path
from streamrec.evaluation import Segment, ground_truth_path, read_ground_truth
from streamrec.sources import parse_source
from streamrec.timeline import TimelineRecorder

if TYPE_CHECKING:  # the run command imports the pipeline (and its engines) only once it runs
    from streamrec.pipeline import HopObserver, Pipeline

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("seeing what it recognises")
    group.add_argument("--output-video", metavar="FILE.mp4",
                       help="write each stream's frames with the top labels, scores and active actions drawn on "
                            "them (several streams: FILE-<stream>.mp4 each)")
    group.add_argument("--show", action="store_true", help="show the same frames in a window (needs a display)")
    group.add_argument("--timeline", metavar="FILE.png",
                       help="after the run, plot each stream's scores over time with the thresholds, the "
                            "detected actions and, for a file with ground truth next to it (clip.json), the truth")


class Visuals:
    """What those flags ask for. Paths are checked here, before any model is loaded."""

    def __init__(self, args: argparse.Namespace, config: Config):
        stream_ids = [stream.id for stream in config.streams]
        self.files = {stream.id: Path(spec.target) for stream in config.streams
                      if (spec := parse_source(stream.source)).kind == "file"}  # the file sources
        show = args.show
        if show and (problem := display_problem()):
            log.warning("--show: no display available (%s); continuing without a window", problem)
            show = False
        if args.output_video:  # a URL first: OpenCV writes local files here, and FILE-<stream>.mp4 needs a file name
            check_output_path(args.output_video, "--output-video")
        paths = video_paths(args.output_video, stream_ids) if args.output_video else {}
        for path in paths.values():
            self._check_writable(path, "--output-video")
            check_video_writer(path, "--output-video")
        self.annotator = Annotator(stream_ids, paths, show) if paths or show else None
        self.timeline_path = args.timeline
        self.recorder = TimelineRecorder() if args.timeline else None
        if args.timeline:
            check_figure_path(args.timeline, "--timeline")  # before the run, not after it
            self._check_writable(Path(args.timeline), "--timeline")

    @property
    def observers(self) -> list[HopObserver]:
        return [part.observe for part in (self.annotator, self.recorder) if part]

    @property
    def frame_taps(self) -> list[FrameTap]:
        return [self.annotator.frame_tap] if self.annotator else []

    def start(self, pipeline: Pipeline) -> None:
        if self.annotator:
            self.annotator.start(pipeline.stats)

    def stop(self) -> None:
        """Finish the annotated videos (after `Pipeline.run` has returned or failed)."""
        if self.annotator:
            self.annotator.close()

    def write_timeline(self) -> None:
        if self.recorder:
            truth = self._ground_truth()
            self.recorder.write(self.timeline_path, {stream_id: segments for stream_id, (_, segments) in truth.items()})
            with_truth = f" with ground truth from {', '.join(str(path) for path, _ in truth.values())}" if truth else ""
            log.info("timeline written to %s%s", self.timeline_path, with_truth)

    def _ground_truth(self) -> dict[str, tuple[Path, list[Segment]]]:
        """True segments of the file sources with a ground-truth file next to them (what `eval` reads)."""
        truth = {}
        for stream_id, video in self.files.items():
            path = ground_truth_path(video)
            if path.is_file():
                try:
                    truth[stream_id] = (path, read_ground_truth(path))
                except StreamrecError as err:
                    log.warning("timeline of %s drawn without ground truth: %s", stream_id, err)
        return truth

    def _check_writable(self, path: Path, flag: str) -> None:
        check_output_path(path, flag)
        if any(video.resolve() == path.resolve() for video in self.files.values()):
            raise StreamrecError(f"{flag} {path} is also a --source: choose another output file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StreamrecError(f"cannot write {flag} {path}: {exc.strerror}; choose a writable path") from None
        if path.is_dir() or not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise StreamrecError(f"cannot write {flag} {path}: not a writable file; choose a writable path")


def check_video_writer(path: Path, flag: str) -> None:
    """Open a video writer as `annotate` will (mp4v, same folder and container) on a probe file
    beside ``path``, then remove it: a place or container OpenCV cannot write (a read-only or
    virtual file system such as /proc, a folder that is not one) is refused in one line before the
    run, not found by the drawing thread after the model has loaded. The probe, not ``path``
    itself, so an existing video is not truncated by a run that is then refused."""
    probe = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.probe{path.suffix}")
    writer = cv2.VideoWriter(str(probe), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (64, 64))
    try:
        opened = writer.isOpened()
    finally:
        writer.release()
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
    if not opened:
        raise StreamrecError(f"cannot write {flag} {path}: OpenCV cannot open a video file there; choose a path "
                             "in a writable folder on a local disk")
