"""Person detectors: the registry and its errors, the ``detection:`` section's checks, the motion
and HOG detectors on real footage, and the ONNX detector on real ONNX graphs in ONNX Runtime.

Real footage nobody here made: ``vtest.avi`` from Debian's ``opencv-doc`` (pedestrians under a
fixed camera, 768x576 at 10 fps), against people boxed by hand in seven of its frames. The
ONNX graphs are tiny PyTorch models exported in the YOLOv8 and YOLOv5 layouts whose outputs
are known: they box the one white rectangle of each image, among decoys.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import assert_runs_without_torch
from streamrec.detection import (Keyframe, available_detectors, create_detector, detector_problem,
                                 registered_detectors)
from streamrec.detection.bench import VTEST, bench_detectors, tracked_picture
from streamrec.detection.boxes import Detections, iou_matrix, nms, scale_boxes, widen
from streamrec.detection.config import (DetectionConfig, HogConfig, MotionConfig, OnnxConfig, TrackerConfig,
                                        check_detection)
from streamrec.detection.hog import hog_available
from streamrec.detection.motion import merge_parts
from streamrec.errors import StreamrecError

needs_vtest = pytest.mark.skipif(not VTEST.is_file() and not os.environ.get("CI"),
                                 reason="needs Debian's opencv-doc (apt-get install opencv-doc)")
needs_hog = pytest.mark.skipif(not hog_available(), reason=f"OpenCV {cv2.__version__} has no HOGDescriptor "
                               "(OpenCV 5 moved it to opencv-contrib-python-headless)")
VTEST_FPS = 10.0
KEYFRAME_STRIDE = 3  # every 3rd frame at 10 fps: keyframes 0.3 s apart, as hop 8 at 30 fps
# Every person in seven frames of vtest.avi, boxed by hand (x1, y1, x2, y2), partly hidden ones
# included; left out: a sliver of someone at the frame's right edge (frame 500) and a figure about
# 15 px tall by the van (frame 700).
PEOPLE = {
    100: [(221, 60, 238, 95), (347, 198, 383, 275), (374, 178, 410, 256), (428, 185, 450, 258),
          (492, 148, 520, 220), (514, 150, 542, 222), (589, 150, 618, 234)],
    200: [(82, 153, 111, 214), (218, 192, 249, 266), (487, 145, 517, 222), (615, 265, 650, 368),
          (704, 253, 744, 353), (677, 98, 698, 153), (702, 103, 722, 154)],
    300: [(187, 160, 219, 234), (242, 160, 270, 220), (298, 158, 324, 230), (313, 210, 344, 296),
          (581, 160, 612, 236), (618, 160, 644, 234)],
    400: [(273, 200, 302, 287), (589, 140, 617, 204), (687, 300, 744, 412)],
    500: [(305, 187, 333, 265), (556, 240, 592, 350), (570, 282, 613, 392), (613, 273, 641, 373)],
    600: [(188, 143, 215, 214), (567, 198, 597, 288), (668, 207, 704, 296), (453, 301, 506, 420),
          (640, 304, 672, 413), (283, 431, 332, 576)],
    700: [(185, 166, 212, 238), (279, 210, 308, 295), (365, 170, 397, 255), (405, 152, 426, 205),
          (474, 135, 496, 200), (518, 165, 545, 235), (683, 217, 729, 306), (100, 286, 143, 395)],
}
PEOPLE_COUNT = sum(len(boxes) for boxes in PEOPLE.values())  # 41


def read_vtest(indices: set[int]):
    """(index, RGB frame) of vtest.avi's frames at ``indices``, in order (the others only grabbed)."""
    capture = cv2.VideoCapture(str(VTEST))
    index = 0
    try:
        while capture.grab():
            if index in indices:
                ok, frame = capture.retrieve()
                assert ok, f"vtest.avi frame {index} did not decode"
                yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()


@functools.lru_cache(maxsize=1)
def motion_on_vtest() -> dict[int, Detections]:
    """The motion detector on vtest.avi's keyframes (every `KEYFRAME_STRIDE`-th frame, and the
    hand-boxed ones), as a pipeline would run it: keyframes only, nothing observed between them."""
    detector = create_detector(DetectionConfig())
    keyframes = set(range(0, 795, KEYFRAME_STRIDE)) | set(PEOPLE)
    return {index: detector.detect([Keyframe("vtest", frame, index / VTEST_FPS)])[0]
            for index, frame in read_vtest(keyframes)}


def people_found(detections: dict[int, Detections], min_score: float, min_height: int = 0,
                 min_iou: float = 0.3) -> tuple[int, int]:
    """(hand-boxed people at least ``min_height`` px tall with a box of at least ``min_score`` on
    them, boxes of at least ``min_score`` on no one), over the frames of `PEOPLE`, one box a person."""
    from scipy.optimize import linear_sum_assignment

    found = strays = 0
    for index, people in PEOPLE.items():
        boxes = detections[index].boxes[detections[index].scores >= min_score]
        overlap = iou_matrix(np.array(people, np.float32), boxes)
        rows, cols = linear_sum_assignment(-overlap) if boxes.size else ([], [])
        matched = [r for r, c in zip(rows, cols) if overlap[r, c] >= min_iou]
        found += sum(people[r][3] - people[r][1] >= min_height for r in matched)
        strays += len(boxes) - len(matched)
    return found, strays


# --------------------------------------------------------------------------- real footage


@needs_vtest
def test_motion_finds_the_people_walking_in_vtest():
    """People boxed (IoU >= 0.3) and boxes on no one, all of them and those scoring 0.5 or more;
    the bounds sit a little under what was measured (BENCHMARKS.md, "People on vtest.avi"). The
    people it misses stand still for longer than fade_s, or walk so close to someone that one
    blob covers both."""
    detections = motion_on_vtest()
    found, strays = people_found(detections, min_score=DetectionConfig().score_threshold)
    found_high, strays_high = people_found(detections, min_score=0.5)
    assert found >= 31, f"{found} of {PEOPLE_COUNT} people found"
    assert found_high >= 29, f"{found_high} of {PEOPLE_COUNT} people found with a score of 0.5 or more"
    assert strays_high <= 3, f"{strays_high} high-score boxes on no one"
    assert strays <= 12, f"{strays} boxes on no one"
    assert len(detections[0]) == 0  # no boxes until the background has been seen for warmup_s


@needs_vtest
@needs_hog
def test_hog_finds_the_people_tall_enough_in_vtest():
    """HOG's window holds a person 96 px tall: at vtest.avi's full size it finds the people near
    the camera, all those from 96 px tall but one the frame's edge cuts, and a few smaller ones
    (BENCHMARKS.md, "People on vtest.avi")."""
    detector = create_detector(DetectionConfig(detector="hog"))
    detections = {index: detector.detect([Keyframe("vtest", frame, 0.0)])[0]
                  for index, frame in read_vtest(set(PEOPLE))}
    found, strays = people_found(detections, min_score=DetectionConfig().score_threshold)
    assert found >= 15, f"{found} of {PEOPLE_COUNT} people found"
    assert strays <= 3, f"{strays} boxes on no one"
    tall = sum(y2 - y1 >= 96 for people in PEOPLE.values() for _, y1, _, y2 in people)
    found_tall, _ = people_found(detections, min_score=DetectionConfig().score_threshold, min_height=96)
    assert (found_tall, tall) in ((9, 10), (10, 10))


def test_hog_without_opencvs_hog_says_what_to_install(monkeypatch):
    monkeypatch.delattr(cv2, "HOGDescriptor", raising=False)
    with pytest.raises(StreamrecError, match="opencv-contrib-python-headless"):
        create_detector(DetectionConfig(detector="hog"))


# --------------------------------------------------------------------------- motion, synthetic


def scene(width: int = 320, height: int = 240, seed: int = 0) -> np.ndarray:
    """A still, textured background (RGB)."""
    rng = np.random.default_rng(seed)
    texture = cv2.resize(rng.integers(60, 200, (height // 8, width // 8, 3), dtype=np.uint8), (width, height),
                         interpolation=cv2.INTER_LINEAR)
    return texture


def with_person(background: np.ndarray, x: int, y: int, w: int = 20, h: int = 60) -> np.ndarray:
    frame = background.copy()
    frame[y:y + h, x:x + w] = (20, 20, 30)
    return frame


def test_motion_boxes_a_walker_and_loses_one_who_stands_still_after_fade_s():
    """The background's memory is in seconds: fed 30 or 5 frames a second, a person who stops
    is still found well before fade_s and gone well after it."""
    settings = MotionConfig(fade_s=2.0, warmup_s=0.5)
    background = scene()
    for fps in (30.0, 5.0):
        detector = create_detector(DetectionConfig(motion=settings))
        time = 0.0
        for _ in range(int(fps)):  # one second of the empty scene
            detector.observe("cam", background, time)
            time += 1 / fps
        for step in range(int(fps)):  # one second of a person walking right, 60 px a second
            detector.observe("cam", with_person(background, 40 + round(60 * step / fps), 90), time)
            time += 1 / fps
        walking = detector.detect([Keyframe("cam", with_person(background, 100, 90), time)])[0]
        assert len(walking) == 1, fps
        assert iou_matrix(walking.boxes, np.array([[100, 90, 120, 150]], np.float32))[0, 0] > 0.7, walking.boxes
        assert walking.scores[0] > 0.5
        standing = with_person(background, 100, 90)
        found_at = {}
        for seconds in np.arange(1 / fps, 6.0, 1 / fps):  # then standing still
            found = detector.detect([Keyframe("cam", standing, time + seconds)])[0]
            found_at[round(seconds, 2)] = len(found) > 0
        assert found_at[round(np.round(0.5 * fps) / fps, 2)], f"lost at 0.5 s, fed {fps}/s"
        gone = [s for s, seen in found_at.items() if not seen]
        assert gone and 1.0 <= gone[0] <= 4.0, f"fed {fps}/s, gone at {gone[:1]} s, fade_s is 2"
        assert not any(found_at[s] for s in found_at if s >= 4.0)


def test_motion_keeps_each_stream_apart_and_forgets_a_stream():
    detector = create_detector(DetectionConfig(motion=MotionConfig(warmup_s=0.2)))
    a, b = scene(seed=1), scene(seed=2)
    for step in range(10):
        detector.observe("a", a, step / 10)
        detector.observe("b", b, step / 10)
    results = detector.detect([Keyframe("a", with_person(a, 50, 50), 1.0), Keyframe("b", b, 1.0)])
    assert [len(r) for r in results] == [1, 0]
    detector.forget("a")
    assert len(detector.detect([Keyframe("a", with_person(a, 50, 50), 1.1)])[0]) == 0  # warming up again


def test_motion_boxes_come_back_in_the_pixels_of_the_frame_given():
    """Subtraction runs on a 320 px wide copy; boxes are in the 1280x960 frame's pixels."""
    detector = create_detector(DetectionConfig(motion=MotionConfig(warmup_s=0.2)))
    big = cv2.resize(scene(), (1280, 960), interpolation=cv2.INTER_NEAREST)
    for step in range(10):
        detector.observe("cam", big, step / 10)
    person = big.copy()
    person[400:640, 600:680] = (20, 20, 30)
    (found,) = detector.detect([Keyframe("cam", person, 1.0)])
    assert len(found) == 1
    assert np.abs(found.boxes[0] - [600, 400, 680, 640]).max() <= 8, found.boxes


def test_blob_rules_join_a_body_split_apart_and_keep_two_people_apart():
    head, body = [10, 10, 20, 20], [8, 22, 22, 60]  # a gap of 2 px: one person
    left, right = [40, 10, 55, 60], [58, 10, 73, 60]  # side by side: two people
    boxes, pixels = merge_parts(np.array([head, body, left, right], np.float32), np.array([80, 400, 500, 500],
                                                                                         np.float32), max_aspect=5)
    assert boxes.tolist() == [[8, 10, 22, 60], left, right]
    assert pixels.tolist() == [480, 500, 500]
    # two people far apart vertically are not one
    boxes, _ = merge_parts(np.array([[10, 10, 20, 40], [10, 80, 20, 110]], np.float32), np.ones(2, np.float32), 5)
    assert len(boxes) == 2


def test_motion_drops_blobs_without_a_persons_proportions():
    """A wide blob (a car going by) is not a person; a tall one is."""
    detector = create_detector(DetectionConfig(motion=MotionConfig(warmup_s=0.2)))
    background = scene()
    for step in range(10):
        detector.observe("cam", background, step / 10)
    frame = background.copy()
    frame[30:60, 20:140] = (20, 20, 30)  # 120 x 30: a car
    frame[100:190, 200:230] = (20, 20, 30)  # 30 x 90: a person
    (found,) = detector.detect([Keyframe("cam", frame, 1.0)])
    assert len(found) == 1 and found.boxes[0, 0] >= 190, found.boxes


# --------------------------------------------------------------------------- ONNX


def white_box_yolo(path: Path, layout: str, fixed_batch: int | None = None) -> Path:
    """A real ONNX graph in a YOLO layout (3 classes: person, bicycle, car; 64 candidates) whose
    candidates are known: the image's white rectangle as a person (0.9; YOLOv5 layout: objectness
    0.5 times class 0.9), the same shifted 2 px (0.8, a duplicate for NMS to drop), and fixed boxes
    in the input's pixels: a car (0.95), a faint person (0.1) and a person at (300, 300, 340, 400)
    (0.6). The rest score 0."""
    torch = pytest.importorskip("torch")

    class WhiteBoxYolo(torch.nn.Module):
        def __init__(self):
            super().__init__()
            # cx, cy, w, h and class scores of the fixed candidates
            self.register_buffer("fixed_boxes", torch.tensor([[50.0, 60, 20, 60], [200, 100, 30, 80],
                                                              [320, 350, 40, 100]]))
            self.register_buffer("fixed_scores", torch.tensor([[0, 0, 0.95], [0.1, 0, 0], [0.6, 0, 0]]))
            self.register_buffer("shift", torch.tensor([2.0, 1.0, 0.0, 0.0]))
            self.register_buffer("person", torch.tensor([1.0, 0.0, 0.0]))

        def forward(self, images):
            batch, _, height, width = images.shape
            white = images.amin(dim=1) > 0.9
            xs = torch.arange(width, dtype=images.dtype).view(1, 1, width).expand_as(white)
            ys = torch.arange(height, dtype=images.dtype).view(1, height, 1).expand_as(white)
            far = torch.full_like(xs, 1e6)
            x1, y1 = torch.where(white, xs, far).amin(dim=(1, 2)), torch.where(white, ys, far).amin(dim=(1, 2))
            x2 = torch.where(white, xs, -far).amax(dim=(1, 2)) + 1
            y2 = torch.where(white, ys, -far).amax(dim=(1, 2)) + 1
            found = white.flatten(1).any(dim=1).to(images.dtype)[:, None]
            box = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], 1) * found
            objectness = 0.5 if layout == "yolov5" else 1.0
            rows = torch.stack([torch.cat([box, self.person * 0.9 * found], 1),
                                torch.cat([box + self.shift, self.person * 0.8 * found], 1)], 1)
            fixed = torch.cat([self.fixed_boxes, self.fixed_scores], 1).expand(batch, 3, 7)
            rows = torch.cat([rows, fixed, torch.zeros(batch, 59, 7)], 1)  # [B, 64, 4 + 3]
            if layout == "yolov8":
                return rows.transpose(1, 2)  # [B, 7, 64]
            obj = torch.ones(batch, 64, 1)
            obj[:, :2] = objectness
            return torch.cat([rows[..., :4], obj, rows[..., 4:]], 2)  # [B, 64, 8]

    example = torch.zeros(fixed_batch or 2, 3, 640, 640)
    dynamic = None if fixed_batch else {"images": {0: "batch"}, "output0": {0: "batch"}}
    torch.onnx.export(WhiteBoxYolo().eval(), (example,), str(path), input_names=["images"], output_names=["output0"],
                      dynamic_axes=dynamic, opset_version=17, dynamo=False)
    return path


def white_box_frame(width: int, height: int, box: tuple[int, int, int, int]) -> np.ndarray:
    frame = np.full((height, width, 3), 30, np.uint8)
    x1, y1, x2, y2 = box
    frame[y1:y2, x1:x2] = 255
    return frame


class CountingSession:
    """An ONNX Runtime session that counts its calls."""

    def __init__(self, session):
        self.session, self.calls = session, 0

    def run(self, *args, **kwargs):
        self.calls += 1
        return self.session.run(*args, **kwargs)


# Frames of three sizes, each letterboxed differently into 640x640: (size, white box, where the
# fixed person at (300, 300, 340, 400) of the input lands in the frame).
LETTERBOXED = [((640, 480), (100, 120, 180, 300), (300, 220, 340, 320)),
               ((1280, 720), (900, 200, 1000, 500), (600, 320, 680, 520)),
               ((320, 240), (10, 20, 60, 200), (150, 110, 170, 160))]


@pytest.mark.parametrize("layout, white_score", [("yolov8", 0.9), ("yolov5", 0.45)])
def test_onnx_yolo_boxes_people_in_the_frames_pixels_in_one_batched_call(tmp_path, layout, white_score):
    graph = white_box_yolo(tmp_path / f"{layout}.onnx", layout)
    detector = create_detector(DetectionConfig(detector=f"onnx:{graph}"))  # layout: auto
    detector.session = CountingSession(detector.session)
    keyframes = [Keyframe(f"cam{i}", white_box_frame(*size, box), 0.0) for i, (size, box, _) in enumerate(LETTERBOXED)]
    results = detector.detect(keyframes)
    assert detector.session.calls == 1
    for (size, white, fixed), found in zip(LETTERBOXED, results):
        # the white box (its duplicate suppressed) and the fixed person, best first; no car, no faint person
        expected = sorted([(white_score, white, 1.0), (0.6, fixed, 1e-3)], key=lambda e: -e[0])
        assert found.scores.tolist() == pytest.approx([e[0] for e in expected], abs=1e-6), (size, found.scores)
        for box, (_, true_box, tolerance) in zip(found.boxes, expected):  # resizing blurs edges by < 1 px
            assert np.abs(box - true_box).max() <= tolerance, (size, box, true_box)


def test_onnx_yolo_with_a_fixed_batch_of_one_calls_once_per_keyframe(tmp_path):
    graph = white_box_yolo(tmp_path / "b1.onnx", "yolov8", fixed_batch=1)
    detector = create_detector(DetectionConfig(detector=f"onnx:{graph}"))
    detector.session = CountingSession(detector.session)
    assert detector.max_batch == 1
    results = detector.detect([Keyframe("a", white_box_frame(640, 480, (100, 120, 180, 300)), 0.0),
                               Keyframe("b", white_box_frame(640, 480, (300, 100, 340, 200)), 0.0)])
    assert detector.session.calls == 2
    assert [r.boxes[0].tolist() for r in results] == [[100, 120, 180, 300], [300, 100, 340, 200]]


def test_onnx_yolo_reads_a_named_layout_and_checks_the_person_class(tmp_path):
    graph = white_box_yolo(tmp_path / "v8.onnx", "yolov8")
    frame = [Keyframe("a", white_box_frame(640, 480, (100, 120, 180, 300)), 0.0)]
    named = create_detector(DetectionConfig(detector=f"onnx:{graph}", onnx=OnnxConfig(layout="yolov8")))
    assert named.detect(frame)[0].boxes.tolist() == [[100, 120, 180, 300], [300, 220, 340, 320]]
    wrong_class = create_detector(DetectionConfig(detector=f"onnx:{graph}", onnx=OnnxConfig(person_class=3)))
    with pytest.raises(StreamrecError, match="as yolov8 that is 3 classes, and detection.onnx.person_class is 3"):
        wrong_class.detect(frame)


def test_onnx_yolo_refuses_a_missing_file_and_a_graph_that_is_not_a_detector(tmp_path):
    with pytest.raises(StreamrecError, match="no such file"):
        create_detector(DetectionConfig(detector=f"onnx:{tmp_path / 'none.onnx'}"))
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(StreamrecError, match="ONNX Runtime cannot load the detector"):
        create_detector(DetectionConfig(detector=f"onnx:{tmp_path / 'junk.onnx'}"))


def test_onnx_detector_never_imports_torch(tmp_path):
    graph = white_box_yolo(tmp_path / "v8.onnx", "yolov8")
    script = f"""
import numpy as np
from streamrec.detection import Keyframe, create_detector
from streamrec.detection.config import DetectionConfig
from streamrec.detection.tracker import PersonTracker
detector = create_detector(DetectionConfig(detector="onnx:{graph}"))
frame = np.full((480, 640, 3), 30, np.uint8)
frame[120:300, 100:180] = 255
(found,) = detector.detect([Keyframe("a", frame, 0.0)])
PersonTracker(DetectionConfig().tracker).update(found, 0.0)
assert len(found) == 2, found
"""
    assert_runs_without_torch(script)


# --------------------------------------------------------------------------- registry and config


def test_the_registry_lists_every_detector_as_written_in_a_config():
    assert available_detectors() == ["motion", "hog", "onnx:FILE"]
    assert all(kind.summary for kind in registered_detectors().values())


@pytest.mark.parametrize("spec, message", [
    ("moton", "detection.detector 'moton' is not one of motion, hog, onnx:FILE; did you mean 'motion'?"),
    ("yolo", "detection.detector 'yolo' is not one of motion, hog, onnx:FILE"),
    ("onnx", "detection.detector 'onnx' needs its FILE: write it as onnx:FILE"),
    ("onnx:", "detection.detector 'onnx:' needs its FILE: write it as onnx:FILE"),
    ("hog:fast", "detection.detector 'hog:fast': hog takes nothing after ':'; write it as hog"),
])
def test_a_detector_nobody_registered_is_one_clear_line(spec, message):
    assert detector_problem(spec) == message
    with pytest.raises(StreamrecError) as error:
        create_detector(DetectionConfig(detector=spec))
    assert str(error.value) == message


@pytest.mark.parametrize("change, message", [
    ({"score_threshold": 1.5}, "detection.score_threshold must be from 0 to 1, got 1.5"),
    ({"max_persons": 0}, "detection.max_persons must be from 1 to 1000, got 0"),
    ({"motion": MotionConfig(fade_s=0.0)}, "detection.motion.fade_s must be from 0.1 to 3600, got 0"),
    ({"motion": MotionConfig(min_aspect=3.0, max_aspect=2.0)}, "min_aspect must not exceed"),
    ({"hog": HogConfig(stride=12)}, "detection.hog.stride must be a multiple of 8"),
    ({"onnx": OnnxConfig(layout="yolox")}, "detection.onnx.layout must be one of auto, yolov5, yolov8"),
    ({"onnx": OnnxConfig(device="gpu")}, "detection.onnx.device must be cpu, cuda, cuda:N or auto, got 'gpu'"),
    ({"tracker": TrackerConfig(min_hits=0)}, "detection.tracker.min_hits must be from 1 to 1000, got 0"),
    ({"tracker": TrackerConfig(max_missed_s=float("nan"))}, "detection.tracker.max_missed_s must be from"),
    ({"tracker": TrackerConfig(high_score=0.1)}, "score_threshold <= tracker.high_score <= tracker.new_track_score"),
    ({"detector": "hogg"}, "did you mean 'hog'?"),
])
def test_a_bad_detection_section_is_refused_in_one_line(change, message):
    with pytest.raises(StreamrecError, match=message.replace("(", r"\(").replace("?", r"\?")) as error:
        check_detection(dataclasses.replace(DetectionConfig(), **change), "my.yaml")
    assert str(error.value).startswith("my.yaml: ") and "\n" not in str(error.value)


def test_the_default_detection_section_passes():
    check_detection(DetectionConfig())
    check_detection(DetectionConfig(detector="onnx:any.onnx", tracker=TrackerConfig(max_missed_s=2.0)))


# --------------------------------------------------------------------------- boxes


def test_nms_keeps_the_best_of_overlapping_boxes_and_every_apart_one():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    assert nms(boxes, np.array([0.5, 0.9, 0.7, 0.1]), 0.5).tolist() == [1, 2]
    assert nms(boxes, np.array([0.5, 0.9, 0.7, 0.1]), 0.95).tolist() == [1, 2, 0]  # IoU 0.82 stays


def test_box_helpers():
    assert iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30]])).tolist() == \
        [[pytest.approx(1 / 3), 0.0]]
    assert widen(np.array([[10, 10, 20, 30]], np.float32), 0.5).tolist() == [[5, 0, 25, 40]]
    assert scale_boxes(np.array([[10, 20, 30, 40]]), (320, 240), (640, 480)).tolist() == [[20, 40, 60, 80]]


def test_bench_detectors_times_each_detector_at_each_size():
    timings = bench_detectors(["motion"], sizes=[(160, 120), (320, 240)], keyframes=3)
    assert [(t.detector, t.width, t.height, t.keyframes) for t in timings] == [("motion", 160, 120, 3),
                                                                              ("motion", 320, 240, 3)]
    assert all(t.ms_per_keyframe > 0 and t.ms_per_observed_frame > 0 for t in timings)


@needs_vtest
def test_the_readme_picture_boxes_the_tracked_people_and_draws_no_label():
    image, people, frames_from = tracked_picture(30.0)
    raw = cv2.VideoCapture(str(VTEST))
    raw.set(cv2.CAP_PROP_POS_FRAMES, 300)
    ok, frame = raw.read()
    raw.release()
    assert ok and frames_from == VTEST.name and image.shape == frame.shape
    assert people >= 3  # 5 people walk in view at 30 s; two pairs may share a box
    changed = np.any(np.abs(image.astype(int) - frame.astype(int)) > 40, axis=2)
    assert 0.001 < changed.mean() < 0.05  # boxes and id tags drawn, the scene itself left as it was
