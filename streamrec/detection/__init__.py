"""Person detectors, registered by name and chosen by ``detection.detector``; the tracker is
`streamrec.detection.tracker`.

A detector finds people on a stream's keyframe: `PersonDetector.detect` takes the keyframes of
several streams (one each, at most one per hop per stream) and returns, per keyframe, float32
boxes ``[K, 4]`` (x1, y1, x2, y2 in the pixels of the frame given) and scores ``[K]`` in
[0, 1], best first (`Detections`). Frames are uint8 RGB ``[H, W, 3]``, as the capture and the
ring buffer hold them. Backends that batch (ONNX Runtime) run all the keyframes in one call.

A detector that models each stream's background (``motion``) keeps per-stream state: it wants
frames between keyframes too, about ``background_fps`` a second (`PersonDetector.observe`;
feed it each hop's frames from the ring buffer, every ``round(fps / background_fps)``-th, or
from a frame tap), and `PersonDetector.forget` when the stream breaks off or ends. Detectors
without such state take those calls and do nothing. One stream's calls may come from another
thread than another stream's.

Detectors are registered as models and backends are (`streamrec.models`,
`streamrec.backends`): a module in this package whose factory, ``factory(config, argument)``,
is decorated with `register_detector`, plus its name in `DETECTOR_MODULES`. Config validation
and the CLI read `available_detectors` and `detector_problem`; `create_detector` makes the one
a config names. Registering imports no detector library beyond OpenCV (already a core
dependency): ONNX Runtime is imported when an ``onnx:`` detector is made.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Sequence

import numpy as np

from streamrec.detection.boxes import Detections, clip_to_frame, nms
from streamrec.errors import StreamrecError

if TYPE_CHECKING:
    from streamrec.detection.config import DetectionConfig

# Each registers one detector; their order is the order the CLI lists them in.
DETECTOR_MODULES = ("motion", "hog", "onnx_yolo")

__all__ = ["Detections", "Keyframe", "PersonDetector", "available_detectors", "create_detector", "detector_problem",
           "register_detector"]


@dataclass(frozen=True)
class Keyframe:
    """One stream's frame to find people on."""

    stream_id: str
    frame: np.ndarray  # uint8 RGB [H, W, 3]
    time_s: float  # on the stream's clip clock (as views' clip_end): paces a background model


class PersonDetector:
    """A person detector for every stream of a run (see the module docstring for the contract)."""

    name: ClassVar[str]
    background_fps: float | None = None  # frames a second `observe` wants; None: it keeps no background
    max_batch: int = 64  # keyframes one `detect` call takes

    def __init__(self, config: "DetectionConfig"):
        self.config = config

    def observe(self, stream_id: str, frame: np.ndarray, time_s: float) -> None:
        """Show a stream's background model one frame between keyframes (no-op without one)."""

    def forget(self, stream_id: str) -> None:
        """Drop what the detector holds for a stream (it broke off, was reopened or ended)."""

    def detect(self, keyframes: Sequence[Keyframe]) -> list[Detections]:
        """The people on each keyframe, in the keyframes' order."""
        return [self.detect_one(keyframe) for keyframe in keyframes]

    def detect_one(self, keyframe: Keyframe) -> Detections:
        raise NotImplementedError

    def finish(self, boxes: np.ndarray, scores: np.ndarray, frame: np.ndarray) -> Detections:
        """Candidate boxes made `Detections` by the shared rules: cut to the frame, emptied boxes
        and scores under ``score_threshold`` dropped, overlaps suppressed, ``max_persons`` kept."""
        height, width = frame.shape[:2]
        boxes = clip_to_frame(np.asarray(boxes, np.float32).reshape(-1, 4), width, height)
        scores = np.asarray(scores, np.float32).reshape(-1)
        keep = (scores >= self.config.score_threshold) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores = boxes[keep], scores[keep]
        kept = nms(boxes, scores, self.config.nms_iou)[:self.config.max_persons]
        return Detections.of(boxes[kept], scores[kept])


# --------------------------------------------------------------------------- the registry

DetectorFactory = Callable[["DetectionConfig", "str | None"], PersonDetector]


@dataclass(frozen=True)
class DetectorKind:
    """A registered detector: how to make it, and what its name takes after a colon."""

    name: str
    create: DetectorFactory
    argument: str | None  # "FILE" for ``onnx:FILE``; None: the name stands alone
    summary: str  # one line for the CLI's help

    @property
    def spelling(self) -> str:
        return f"{self.name}:{self.argument}" if self.argument else self.name


_DETECTORS: dict[str, DetectorKind] = {}


def register_detector(name: str, *, summary: str, argument: str | None = None
                      ) -> Callable[[DetectorFactory], DetectorFactory]:
    """Register the decorated ``factory(config, argument) -> PersonDetector`` as ``detection.detector: name``
    (``name:ARGUMENT`` when ``argument`` names what follows the colon)."""
    def decorator(factory: DetectorFactory) -> DetectorFactory:
        _DETECTORS[name] = DetectorKind(name, factory, argument, summary)
        return factory

    return decorator


def registered_detectors() -> dict[str, DetectorKind]:
    """Every registered detector by name, in `DETECTOR_MODULES` order."""
    modules = [f"{__name__}.{module}" for module in DETECTOR_MODULES]
    for module in modules:  # importing a detector's module registers it
        importlib.import_module(module)
    return dict(sorted(_DETECTORS.items(), key=lambda item: modules.index(item[1].create.__module__)))


def available_detectors() -> list[str]:
    """The values ``detection.detector`` takes, as written: ``motion``, ``hog``, ``onnx:FILE``."""
    return [kind.spelling for kind in registered_detectors().values()]


def detector_problem(spec: str) -> str | None:
    """Why ``spec`` names no registered detector (with the closest name), or None. Reads no file."""
    kinds = registered_detectors()
    name, colon, argument = spec.partition(":")
    kind = kinds.get(name)
    if kind is None:
        close = difflib.get_close_matches(name, list(kinds), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"detection.detector '{spec}' is not one of {', '.join(available_detectors())}{hint}"
    if kind.argument and not argument:
        return f"detection.detector '{spec}' needs its {kind.argument}: write it as {kind.spelling}"
    if not kind.argument and colon:
        return f"detection.detector '{spec}': {name} takes nothing after ':'; write it as {name}"
    return None


def create_detector(config: "DetectionConfig") -> PersonDetector:
    """The detector ``config.detector`` names."""
    if problem := detector_problem(config.detector):
        raise StreamrecError(problem)
    name, _, argument = config.detector.partition(":")
    return registered_detectors()[name].create(config, argument or None)
