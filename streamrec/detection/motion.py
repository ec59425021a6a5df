"""``motion``: people as moving blobs against a fixed camera's background, with no weights.

Each stream has its own background model, OpenCV's MOG2 (a mixture of Gaussians per pixel),
run on the frame shrunk to ``motion.width`` pixels wide. Its memory is set in seconds, not
frames: each frame it sees is learnt at a rate in proportion to the seconds since the frame
before, so that, however often it is fed, a person standing still fades into the background
after ``fade_s`` (and a ghost left where someone stood fades as fast). Through its first
``warmup_s`` it learns fast, as MOG2 starts, and finds no one.

Keyframes alone keep it going; frames observed between them (`PersonDetector.observe`, about
``feed_fps`` a second, keyframes included) keep it sharper when keyframes are far apart, and
leave fewer stray low-score blobs (BENCHMARKS.md, "People on vtest.avi"). Both calls of one
stream may come from different threads.

A keyframe's foreground (shadows, which MOG2 marks apart, are not foreground) becomes boxes by
these rules, all in the shrunk frame, kernels scaled with ``motion.width``:

1. an opening (3x3) drops speckle; a closing with a tall ellipse (5x9) joins a body's parts;
2. each connected blob is a candidate box;
3. boxes of one body split apart (a head, or legs the colour of the ground, cut off from the
   torso) merge: two boxes overlapping horizontally by half the narrower one's width, with a
   vertical gap under a quarter of the taller one's height, become one, if the union still
   has a person's proportions;
4. a box is a person if its height / width is from ``min_aspect`` to ``max_aspect``;
5. its score is ``a / (a + A)``: ``a`` its blob's moving pixels, ``A`` = ``min_area`` of the
   frame. A blob of ``min_area`` scores 0.5 (the tracker's default ``high_score``: it may start
   a track); smaller ones, down to ``score_threshold`` (a quarter of ``min_area`` at 0.2), are
   low-score boxes that only extend tracks.
"""

from __future__ import annotations

import math
import threading

import cv2
import numpy as np

from streamrec.detection import Keyframe, PersonDetector, register_detector
from streamrec.detection.boxes import Detections
from streamrec.detection.config import DetectionConfig, MotionConfig

SHADOW_BELOW = 200  # MOG2 marks foreground 255 and shadow 127
REFERENCE_WIDTH = 320  # the kernels below are sized for frames this wide
OPEN_KERNEL = (3, 3)  # (width, height) at REFERENCE_WIDTH
CLOSE_KERNEL = (5, 9)
MERGE_OVERLAP = 0.5  # horizontal overlap, of the narrower box's width, for two boxes to be one body
MERGE_GAP = 0.25  # vertical gap, of the taller box's height, that still joins them


@register_detector("motion", summary="background subtraction (MOG2) for fixed cameras; no weights")
def create(config: DetectionConfig, argument: str | None) -> "MotionDetector":
    return MotionDetector(config)


class Background:
    """One stream's background model, and how much of the stream it has seen."""

    def __init__(self, settings: MotionConfig):
        self.settings = settings
        self.lock = threading.Lock()  # observe (maybe a capture thread) and detect (the pipeline's) share it
        self.model: cv2.BackgroundSubtractorMOG2 | None = None
        self.size: tuple[int, int] | None = None  # (width, height) of the frames it models
        self.frames = 0
        self.first_time = 0.0
        self.last_time = 0.0

    def apply(self, frame: np.ndarray, time_s: float) -> np.ndarray:
        """Learn from ``frame`` and return its foreground mask (uint8, the shrunk frame's size)."""
        small = shrink(frame, self.settings.width)
        size = (small.shape[1], small.shape[0])
        if self.model is None or size != self.size:  # a new stream, or its resolution changed
            self.model = cv2.createBackgroundSubtractorMOG2(varThreshold=self.settings.var_threshold,
                                                            detectShadows=True)
            self.size, self.frames, self.first_time, self.last_time = size, 0, time_s, time_s
        self.frames += 1
        elapsed = max(0.0, time_s - self.last_time)
        self.last_time = max(self.last_time, time_s)
        # MOG2 takes a colour for background once the older colours' weight falls under its
        # backgroundRatio: at rate r a frame that takes ln(ratio) / ln(1 - r) ~ -ln(ratio) / r frames,
        # which this rate makes fade_s seconds. Through warmup_s it learns fast (MOG2's own 1 / 2n).
        rate = elapsed * -math.log(self.model.getBackgroundRatio()) / self.settings.fade_s
        if not self.warm:
            rate = max(rate, 1.0 / (2 * self.frames))
        return self.model.apply(small, learningRate=min(rate, 1.0))

    @property
    def warm(self) -> bool:
        return self.frames > 1 and self.last_time - self.first_time >= self.settings.warmup_s


class MotionDetector(PersonDetector):
    name = "motion"

    def __init__(self, config: DetectionConfig):
        super().__init__(config)
        self.settings = config.motion
        self.background_fps = self.settings.feed_fps
        self._streams: dict[str, Background] = {}
        self._lock = threading.Lock()  # guards _streams, not the models

    def observe(self, stream_id: str, frame: np.ndarray, time_s: float) -> None:
        background = self._background(stream_id)
        with background.lock:
            background.apply(frame, time_s)

    def forget(self, stream_id: str) -> None:
        with self._lock:
            self._streams.pop(stream_id, None)

    def detect_one(self, keyframe: Keyframe) -> Detections:
        background = self._background(keyframe.stream_id)
        with background.lock:
            mask = background.apply(keyframe.frame, keyframe.time_s)
            if not background.warm:
                return Detections.empty()
        boxes, pixels = blobs(mask, self.settings)
        scale = keyframe.frame.shape[1] / mask.shape[1]
        min_pixels = self.settings.min_area * mask.size
        return self.finish(boxes * scale, pixels / (pixels + min_pixels), keyframe.frame)

    def _background(self, stream_id: str) -> Background:
        with self._lock:
            if stream_id not in self._streams:
                self._streams[stream_id] = Background(self.settings)
            return self._streams[stream_id]


def shrink(frame: np.ndarray, width: int) -> np.ndarray:
    """``frame`` at ``width`` pixels wide, its aspect kept (as it is if no wider)."""
    height, frame_width = frame.shape[:2]
    if frame_width <= width:
        return frame
    return cv2.resize(frame, (width, max(1, round(height * width / frame_width))), interpolation=cv2.INTER_AREA)


def _kernel(shape: int, size: tuple[int, int], width: int) -> np.ndarray:
    scale = width / REFERENCE_WIDTH
    w, h = (max(1, round(side * scale)) | 1 for side in size)  # odd sides keep the kernel centred
    return cv2.getStructuringElement(shape, (w, h))


def blobs(mask: np.ndarray, settings: MotionConfig) -> tuple[np.ndarray, np.ndarray]:
    """People-shaped blobs of a foreground mask: boxes [K, 4] in the mask's pixels and each one's
    count of moving pixels [K] (see the module docstring for the rules)."""
    width = mask.shape[1]
    moving = np.where(mask >= SHADOW_BELOW, 255, 0).astype(np.uint8)
    moving = cv2.morphologyEx(moving, cv2.MORPH_OPEN, _kernel(cv2.MORPH_RECT, OPEN_KERNEL, width))
    moving = cv2.morphologyEx(moving, cv2.MORPH_CLOSE, _kernel(cv2.MORPH_ELLIPSE, CLOSE_KERNEL, width))
    count, _, stats, _ = cv2.connectedComponentsWithStats(moving, connectivity=8)
    stats = stats[1:]  # label 0 is the background
    boxes = np.stack([stats[:, 0], stats[:, 1], stats[:, 0] + stats[:, 2], stats[:, 1] + stats[:, 3]], axis=1)
    boxes, pixels = merge_parts(boxes.astype(np.float32), stats[:, 4].astype(np.float32), settings.max_aspect)
    heights, widths = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
    person = (heights >= settings.min_aspect * widths) & (heights <= settings.max_aspect * widths)
    return boxes[person], pixels[person]


def merge_parts(boxes: np.ndarray, pixels: np.ndarray, max_aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """Join boxes that are parts of one body: stacked (overlapping horizontally by `MERGE_OVERLAP`
    of the narrower, apart vertically by at most `MERGE_GAP` of the taller) or overlapping, when
    the union is no taller than ``max_aspect`` times its width."""
    boxes, pixels = list(boxes), list(pixels)
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                overlap_x = min(a[2], b[2]) - max(a[0], b[0])
                gap_y = max(a[1], b[1]) - min(a[3], b[3])  # negative: they overlap vertically
                narrower = min(a[2] - a[0], b[2] - b[0])
                taller = max(a[3] - a[1], b[3] - b[1])
                union = np.array([min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])], np.float32)
                if (overlap_x >= MERGE_OVERLAP * narrower and gap_y <= MERGE_GAP * taller
                        and union[3] - union[1] <= max_aspect * (union[2] - union[0])):
                    boxes[i], pixels[i] = union, pixels[i] + pixels[j]
                    del boxes[j], pixels[j]
                    merged = True
                    break
            if merged:
                break
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(pixels, np.float32)
