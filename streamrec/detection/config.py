"""The ``detection:`` config section: which person detector, its thresholds, and the tracker.

Written to be merged into `streamrec.config`: the dataclasses become ``Config.detection``,
`RANGES` joins its ``RANGES`` (the paths already start with ``detection.``), and `problems`
joins its ``_problems`` (it yields the same ``(paths, message)`` pairs). Until then
`check_detection` refuses a bad section the way ``validate`` would.

```yaml
detection:
  detector: motion          # motion | hog | onnx:FILE (streamrec.detection.available_detectors)
  score_threshold: 0.2      # boxes scoring less are dropped by the detector
  tracker:
    min_hits: 3             # a track starts once matched on 3 hops in a row
    max_missed_hops: 8      # ... and ends after 8 hops unseen (or max_missed_s seconds)
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator

from streamrec.errors import StreamrecError

ONNX_LAYOUTS = ("auto", "yolov5", "yolov8")  # see streamrec.detection.onnx_yolo


@dataclass(frozen=True)
class MotionConfig:
    """Background subtraction (OpenCV's MOG2) for a fixed camera; see `streamrec.detection.motion`."""

    fade_s: float = 5.0  # a person standing still this long fades into the background
    feed_fps: float = 10.0  # frames per second the background model should see (keyframes included)
    width: int = 320  # frames are shrunk to this width first (boxes come back in the frame's pixels)
    min_area: float = 0.001  # a moving blob covering this fraction of the frame scores 0.5
    min_aspect: float = 0.8  # a person's box height / width, from ...
    max_aspect: float = 5.0  # ... to
    var_threshold: float = 16.0  # MOG2's varThreshold: how far from the background a pixel must be to move
    warmup_s: float = 1.0  # no boxes until the background has seen frames for this long


@dataclass(frozen=True)
class HogConfig:
    """OpenCV's HOG people detector (Dalal-Triggs); see `streamrec.detection.hog`."""

    scale_step: float = 1.05  # the image pyramid's step: a larger one is faster and misses people between its scales
    stride: int = 8  # the detection window's stride in pixels, a multiple of 8


@dataclass(frozen=True)
class OnnxConfig:
    """A user's YOLO detector exported to ONNX; see `streamrec.detection.onnx_yolo`."""

    layout: str = "auto"  # auto | yolov5 | yolov8: how the output is laid out
    input_size: int = 640  # the letterbox side, for graphs whose input size is dynamic
    person_class: int = 0  # COCO's person
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (a GPU where this onnxruntime has one)
    threads: int = 0  # CPU threads per call; 0: ONNX Runtime's default
    max_batch: int = 16  # keyframes per call, for graphs with a dynamic batch axis


@dataclass(frozen=True)
class TrackerConfig:
    """ByteTrack-style association of boxes across hops; see `streamrec.detection.tracker`."""

    high_score: float = 0.5  # boxes from here up are matched first; lower ones only extend tracks
    new_track_score: float = 0.6  # an unmatched box from here up starts a new (tentative) track
    match_iou: float = 0.2  # least IoU between a track's predicted box and a high-score box
    low_match_iou: float = 0.5  # ... and a low-score box
    # High-score boxes and predicted ones are widened by this fraction of their size on every side
    # before their IoU is taken, so that someone who moved more than their width between hops still
    # overlaps their track (C-BIoU's buffer); low-score boxes are matched unwidened.
    buffer: float = 0.3
    # The confirmed tracks seen on the hop before and still unmatched then try the high-score boxes
    # left with this wider buffer (C-BIoU's second, larger buffer): a person who falls or sits down
    # turns from a tall box into a wide one within a hop or two, and would otherwise restart as a
    # new track in the middle of the action.
    wide_buffer: float = 1.0
    # Weight of the colour distance between a box and a track (a distance from 0 to 1,
    # `streamrec.detection.appearance`) in their matching cost, beside 1 - IoU: two people whose
    # boxes crossed take back their own tracks. 0: boxes alone.
    appearance_weight: float = 1.0
    # A track gone missing (hidden behind someone, missed by the detector) takes back a box left
    # unmatched whose colours are within this distance of its own (0 to 1; 0: never), when the box
    # is near where the track was last seen: after a few hops out of sight its predicted box has
    # drifted, and the person would otherwise start a new track.
    reid_distance: float = 0.5
    min_hits: int = 3  # a new track is confirmed (started) once matched on this many hops in a row
    max_missed_hops: int = 8  # a track ends after this many hops unseen ...
    max_missed_s: float | None = None  # ... or, when set, this many seconds unseen

    @property
    def uses_colours(self) -> bool:
        """Whether the tracker reads boxes' colour signatures at all (else they need not be computed)."""
        return self.appearance_weight > 0 or self.reid_distance > 0


@dataclass(frozen=True)
class DetectionConfig:
    detector: str = "motion"  # motion | hog | onnx:FILE
    score_threshold: float = 0.2  # boxes scoring less are dropped
    nms_iou: float = 0.5  # a box overlapping a better one by more than this is dropped
    max_persons: int = 32  # boxes kept per keyframe, best first
    motion: MotionConfig = MotionConfig()
    hog: HogConfig = HogConfig()
    onnx: OnnxConfig = OnnxConfig()
    tracker: TrackerConfig = TrackerConfig()


# Every numeric value's allowed range, both ends included (as streamrec.config.RANGES).
RANGES: dict[str, tuple[float, float]] = {
    "detection.score_threshold": (0.0, 1.0),
    "detection.nms_iou": (0.0, 1.0),
    "detection.max_persons": (1, 1000),
    "detection.motion.fade_s": (0.1, 3600),
    "detection.motion.feed_fps": (0.1, 120),
    "detection.motion.width": (64, 4096),
    "detection.motion.min_area": (1e-5, 0.5),
    "detection.motion.min_aspect": (0.1, 20),
    "detection.motion.max_aspect": (0.1, 20),
    "detection.motion.var_threshold": (1, 1000),
    "detection.motion.warmup_s": (0, 600),
    "detection.hog.scale_step": (1.01, 2.0),
    "detection.hog.stride": (8, 64),
    "detection.onnx.input_size": (32, 4096),
    "detection.onnx.person_class": (0, 100_000),
    "detection.onnx.threads": (0, 1024),
    "detection.onnx.max_batch": (1, 1024),
    "detection.tracker.high_score": (0.0, 1.0),
    "detection.tracker.new_track_score": (0.0, 1.0),
    "detection.tracker.match_iou": (0.01, 1.0),
    "detection.tracker.low_match_iou": (0.01, 1.0),
    "detection.tracker.buffer": (0.0, 2.0),
    "detection.tracker.wide_buffer": (0.0, 4.0),
    "detection.tracker.appearance_weight": (0.0, 10.0),
    "detection.tracker.reid_distance": (0.0, 1.0),
    "detection.tracker.min_hits": (1, 1000),
    "detection.tracker.max_missed_hops": (0, 100_000),
    "detection.tracker.max_missed_s": (0.01, 86_400),
}

Problems = Iterator[tuple[tuple[str, ...], str]]  # (the config paths involved, what is wrong)


def problems(detection: DetectionConfig) -> Problems:
    """What is wrong with a ``detection:`` section, as ``(paths, message)`` pairs."""
    for path, (low, high) in RANGES.items():
        value = _value(detection, path)
        if value is not None and not low <= value <= high:  # also refuses nan
            yield (path,), f"{path} must be from {_number(low)} to {_number(high)}, got {_number(value)}"
    from streamrec.detection import detector_problem  # the registry reads this module's dataclasses

    if problem := detector_problem(detection.detector):
        yield ("detection.detector",), problem
    tracker, motion = detection.tracker, detection.motion
    checks = [  # (paths, ok, message)
        (("detection.tracker.high_score", "detection.score_threshold"),
         detection.score_threshold <= tracker.high_score <= tracker.new_track_score,
         "detection needs score_threshold <= tracker.high_score <= tracker.new_track_score"),
        (("detection.motion.min_aspect", "detection.motion.max_aspect"), motion.min_aspect <= motion.max_aspect,
         "detection.motion.min_aspect must not exceed detection.motion.max_aspect"),
        (("detection.hog.stride",), detection.hog.stride % 8 == 0,
         f"detection.hog.stride must be a multiple of 8 (HOG's cell), got {detection.hog.stride}"),
        (("detection.onnx.layout",), detection.onnx.layout in ONNX_LAYOUTS,
         f"detection.onnx.layout must be one of {', '.join(ONNX_LAYOUTS)}, got {detection.onnx.layout!r}"),
        (("detection.onnx.device",), re.fullmatch(r"cpu|auto|cuda(:\d+)?", detection.onnx.device) is not None,
         f"detection.onnx.device must be cpu, cuda, cuda:N or auto, got {detection.onnx.device!r}"),
    ]
    for paths, ok, message in checks:
        if not ok:
            yield paths, message


def check_detection(detection: DetectionConfig, source: str = "config") -> None:
    """Refuse a bad section in one line naming the value and where it came from."""
    for _paths, message in problems(detection):
        raise StreamrecError(f"{source}: {message}")


def _value(detection: DetectionConfig, path: str) -> Any:
    node: Any = detection
    for part in path.split(".")[1:]:  # past "detection"
        node = getattr(node, part)
    return node


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"
