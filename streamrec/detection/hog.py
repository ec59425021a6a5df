"""``hog``: OpenCV's HOG people detector (Dalal and Triggs' linear SVM on a 64x128 window), no
weights to ship.

Its window holds a person 96 pixels tall (at scale 1; the pyramid only shrinks the frame), and
it finds few people much smaller than that in the frame it is given: feed it frames where
people are that tall. Its cost grows with the frame's area (BENCHMARKS.md, "People on
vtest.avi"). OpenCV 4 has it; OpenCV 5 moved it to the contrib build
(``opencv-contrib-python-headless``), and without it this detector says so when it is made.

The window holds a person with 16 pixels of margin on every side (the INRIA person data it was
trained on), so each box is the window less those margins: a quarter of its width off each
side, an eighth of its height off the top and the bottom. The score is the SVM's margin ``m``
squashed into [0, 1) as ``1 - exp(-m)``: 0.5 at ``m = ln 2``; ``score_threshold`` 0.2 keeps
margins from 0.22.
"""

from __future__ import annotations

import math
import threading

import cv2
import numpy as np

from streamrec.detection import Keyframe, PersonDetector, register_detector
from streamrec.detection.boxes import Detections
from streamrec.detection.config import DetectionConfig
from streamrec.errors import StreamrecError

PERSON_IN_WINDOW = (0.25, 0.125, 0.75, 0.875)  # x1, y1, x2, y2 of the person, as fractions of the window
PADDING = (8, 8)  # pixels around the frame, so people at its edges fit a window


@register_detector("hog", summary="OpenCV's HOG people detector, for people from about 96 px tall; no weights")
def create(config: DetectionConfig, argument: str | None) -> "HogDetector":
    return HogDetector(config)


def hog_available() -> bool:
    return hasattr(cv2, "HOGDescriptor")


class HogDetector(PersonDetector):
    name = "hog"

    def __init__(self, config: DetectionConfig):
        super().__init__(config)
        if not hog_available():
            raise StreamrecError(
                f"detection.detector hog needs OpenCV's HOGDescriptor, which this OpenCV {cv2.__version__} lacks "
                "(OpenCV 5 moved it to the contrib build): install opencv-contrib-python-headless in place of "
                "opencv-python-headless, or choose detection.detector motion")
        self.settings = config.hog
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self._lock = threading.Lock()  # one descriptor, one caller at a time
        # The least SVM margin kept: the one whose score is score_threshold.
        self._min_margin = -math.log(max(1e-6, 1.0 - config.score_threshold))

    def detect_one(self, keyframe: Keyframe) -> Detections:
        stride = (self.settings.stride, self.settings.stride)
        with self._lock:
            windows, margins = self._hog.detectMultiScale(keyframe.frame, hitThreshold=self._min_margin,
                                                          winStride=stride, padding=PADDING,
                                                          scale=self.settings.scale_step)
        windows = np.asarray(windows, np.float32).reshape(-1, 4)
        margins = np.asarray(margins, np.float32).reshape(-1)
        x, y, w, h = windows.T
        fx1, fy1, fx2, fy2 = PERSON_IN_WINDOW
        boxes = np.stack([x + fx1 * w, y + fy1 * h, x + fx2 * w, y + fy2 * h], axis=1)
        return self.finish(boxes, 1.0 - np.exp(-np.maximum(margins, 0.0)), keyframe.frame)
