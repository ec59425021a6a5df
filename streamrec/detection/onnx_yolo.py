"""``onnx:FILE``: a user's YOLO detector exported to ONNX, run by ONNX Runtime (never torch).

The output layouts it reads (``detection.onnx.layout``), from the graph's first output:

- ``yolov8``: ``[B, 4 + C, N]``, each of N candidates as ``cx, cy, w, h`` then C class scores.
  Ultralytics' exports of YOLOv8 and YOLO11 (``yolo export format=onnx``).
- ``yolov5``: ``[B, N, 5 + C]``, each candidate as ``cx, cy, w, h, objectness`` then C class
  scores; its score is objectness times the class score. YOLOv5's ``export.py --include onnx``,
  and YOLOv7's export without its NMS.
- ``auto``: ``yolov8`` when the second axis is the shorter (candidates run along the last
  axis), else ``yolov5``. Where the two could be confused (a graph with fewer candidates than
  channels), name the layout.

Scores are taken as they are (those exports apply the sigmoid inside the graph). Graphs that
end in their own NMS (end-to-end exports such as YOLOv10's, or ``nms=True``) output kept boxes,
not candidates, and are not read. The person is class ``onnx.person_class`` (0 in COCO);
candidates of other classes are dropped, and overlaps are suppressed here.

The input is the graph's first, ``[B, 3, H, W]`` float RGB in [0, 1] (float16 where the graph
takes it), letterboxed as Ultralytics does: the frame resized to fit ``W x H`` with its aspect
kept, then centred on grey (114) padding; boxes are mapped back to the frame's pixels. ``H`` and
``W`` come from the graph, or are ``onnx.input_size`` where it leaves them open. A graph whose
batch axis is open takes up to ``onnx.max_batch`` keyframes in one call; a fixed batch is
filled with blank images.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from streamrec.detection import Keyframe, PersonDetector, register_detector
from streamrec.detection.boxes import Detections
from streamrec.detection.config import DetectionConfig
from streamrec.errors import StreamrecError

log = logging.getLogger(__name__)
PAD_VALUE = 114  # Ultralytics' letterbox grey
MAX_CANDIDATES = 1000  # best-scoring candidates per image that go on to NMS


@register_detector("onnx", argument="FILE",
                   summary="a YOLOv5 / YOLOv8 / YOLO11 detector exported to ONNX, run by ONNX Runtime")
def create(config: DetectionConfig, argument: str | None) -> "OnnxYoloDetector":
    from streamrec.config import found_path  # a config's own paths resolve from the checkout, as checkpoints do

    return OnnxYoloDetector(found_path(argument or ""), config)


@dataclass(frozen=True)
class Letterbox:
    """How one frame was placed in the graph's input: scaled by ``scale``, then shifted by the padding."""

    scale: float
    left: int
    top: int

    def to_frame(self, boxes: np.ndarray) -> np.ndarray:
        shift = np.array([self.left, self.top, self.left, self.top], np.float32)
        return (boxes - shift) / self.scale


def letterbox(frame: np.ndarray, width: int, height: int, out: np.ndarray) -> Letterbox:
    """Write ``frame`` (uint8 RGB [h, w, 3]) resized to fit ``width x height``, centred on grey,
    into ``out`` (uint8 [height, width, 3])."""
    h, w = frame.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    left, top = round((width - new_w) / 2 - 0.1), round((height - new_h) / 2 - 0.1)  # as Ultralytics rounds
    out[:] = PAD_VALUE
    resized = frame if (new_w, new_h) == (w, h) else cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    out[top:top + new_h, left:left + new_w] = resized
    return Letterbox(scale, left, top)


def person_candidates(output: np.ndarray, layout: str, person_class: int) -> tuple[np.ndarray, np.ndarray]:
    """One image's raw output (``[4 + C, N]`` or ``[N, 5 + C]``) as person boxes ``[N, 4]`` (x1, y1,
    x2, y2 in the graph's input pixels) and scores ``[N]``."""
    if layout == "yolov8":
        rows = output.T
        scores = rows[:, 4 + person_class]
    else:
        rows = output
        scores = rows[:, 4] * rows[:, 5 + person_class]
    cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return boxes.astype(np.float32), scores.astype(np.float32)


class OnnxYoloDetector(PersonDetector):
    name = "onnx"

    def __init__(self, path: Path, config: DetectionConfig):
        super().__init__(config)
        try:
            import onnxruntime as ort
        except ImportError:
            raise StreamrecError(f"detection.detector onnx:{path} runs on ONNX Runtime, which is not installed; "
                                 "pip install 'streamrec[onnxruntime]', or set detection.detector=motion") from None

        from streamrec.backends.cuda_memory import first_line
        from streamrec.backends.onnxruntime_backend import check_providers, choose_providers, session_device

        settings = config.onnx
        if not path.is_file():
            raise StreamrecError(f"detection.detector onnx:{path}: no such file; give the path of your detector's "
                                 ".onnx export")
        options = ort.SessionOptions()
        if settings.threads > 0:
            options.intra_op_num_threads = settings.threads
        providers = choose_providers(ort.get_available_providers(), settings.device)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types, one per failure kind
            raise StreamrecError(f"ONNX Runtime cannot load the detector {path}: {first_line(err)}") from None
        check_providers(providers, self.session, settings.device, path)
        self.device = session_device(self.session)
        self.path = path
        self.person_class = settings.person_class
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        shape = list(graph_input.shape)
        if len(shape) != 4 or shape[1] not in (3, "3"):
            raise StreamrecError(f"the detector {path} takes {graph_input.name} {graph_input.shape}; a YOLO export "
                                 "takes images [batch, 3, height, width]")
        self.input_dtype = np.float16 if graph_input.type == "tensor(float16)" else np.float32
        self.height = shape[2] if isinstance(shape[2], int) else settings.input_size
        self.width = shape[3] if isinstance(shape[3], int) else settings.input_size
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.max_batch = self.fixed_batch or settings.max_batch
        self.layout = settings.layout
        self._lock = threading.Lock()  # one session call at a time; the input buffer is shared
        self._images = np.empty((self.max_batch, self.height, self.width, 3), np.uint8)
        log.info("detector %s: %dx%d input, batch %s, on %s", path.name, self.width, self.height,
                 self.fixed_batch or f"up to {self.max_batch}", self.device)

    def detect(self, keyframes: Sequence[Keyframe]) -> list[Detections]:
        results: list[Detections] = []
        for start in range(0, len(keyframes), self.max_batch):
            results += self._detect_batch(keyframes[start:start + self.max_batch])
        return results

    def detect_one(self, keyframe: Keyframe) -> Detections:
        return self._detect_batch([keyframe])[0]

    def _detect_batch(self, keyframes: Sequence[Keyframe]) -> list[Detections]:
        with self._lock:
            count = self.fixed_batch or len(keyframes)
            placements = [letterbox(k.frame, self.width, self.height, self._images[i]) for i, k in enumerate(keyframes)]
            self._images[len(keyframes):count] = PAD_VALUE
            batch = self._images[:count].transpose(0, 3, 1, 2).astype(self.input_dtype) / self.input_dtype(255)
            output = self.session.run(None, {self.input_name: batch})[0]
        layout = self._layout_of(output)
        results = []
        for keyframe, placed, raw in zip(keyframes, placements, output):
            boxes, scores = person_candidates(raw.astype(np.float32), layout, self.person_class)
            keep = np.flatnonzero(scores >= self.config.score_threshold)
            keep = keep[np.argsort(-scores[keep], kind="stable")[:MAX_CANDIDATES]]
            results.append(self.finish(placed.to_frame(boxes[keep]), scores[keep], keyframe.frame))
        return results

    def _layout_of(self, output: np.ndarray) -> str:
        """The layout of the graph's output [B, ., .], checked against the person class."""
        if output.ndim != 3:
            raise StreamrecError(f"the detector {self.path} outputs {list(output.shape)}; a YOLO export outputs "
                                 "[batch, 4 + classes, candidates] (yolov8) or [batch, candidates, 5 + classes] "
                                 "(yolov5)")
        layout = self.layout
        if layout == "auto":
            layout = "yolov8" if output.shape[1] < output.shape[2] else "yolov5"
        channels = output.shape[1] if layout == "yolov8" else output.shape[2]
        first_class = 4 if layout == "yolov8" else 5
        if channels <= first_class + self.person_class:
            raise StreamrecError(
                f"the detector {self.path} outputs {list(output.shape)}: as {layout} that is "
                f"{channels - first_class} classes, and detection.onnx.person_class is {self.person_class}; "
                "set detection.onnx.layout or detection.onnx.person_class")
        return layout
