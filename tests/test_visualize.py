"""Annotated video, --show and the score timeline, on real video files and real pipeline runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from conftest import REPO, cli, run_cli, write_video
from streamrec import annotate
from streamrec.annotate import LIVE_QUEUE_FRAMES, Annotator, video_paths
from streamrec.backends import create_engine
from streamrec.config import StreamConfig, load_config, load_labels
from streamrec.evaluation import Segment, ground_truth_path, write_ground_truth
from streamrec.events import EventBus, MemorySink
from streamrec.pipeline import Pipeline
from streamrec.timeline import TimelineRecorder

# Thresholds low enough that the tiny model, trained or not, starts and ends actions on any clip.
EAGER = ["postprocess.enter_threshold=0.1", "postprocess.exit_threshold=0.1", "postprocess.background_labels=[]"]


def read_frames(path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def run_pipeline(sources: dict, recorder: TimelineRecorder | None = None, annotator: Annotator | None = None):
    """The run command's hookup, in process: events of one offline run over the files."""
    config = load_config("slowfast_tiny", ["pipeline.hop_frames=8", *EAGER])
    config = config.replace(streams=tuple(StreamConfig(id=s, source=str(p)) for s, p in sources.items()))
    sink = MemorySink()
    observers = [part.observe for part in (recorder, annotator) if part]
    pipeline = Pipeline(config, create_engine(config), load_labels(config), EventBus([sink]), observers=observers,
                        frame_taps=[annotator.frame_tap] if annotator else [])
    if annotator:
        annotator.start(pipeline.stats)
    try:
        pipeline.run()
    finally:
        if annotator:
            annotator.close()
    return sink.events()


# --------------------------------------------------------------------------- the run command


@pytest.fixture(scope="module")
def annotated_run(video_file, tmp_path_factory):
    """One `run` with all three flags, on a machine without a display, of a file with ground truth."""
    out = tmp_path_factory.mktemp("annotated")
    source = out / "clip.mp4"
    shutil.copy(video_file, source)
    write_ground_truth(ground_truth_path(source), [Segment(0.5, 2.0, "waving"), Segment(2.5, 3.8, "jumping")])
    video, timeline = out / "door.mp4", out / "timeline.png"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run(
        cli("run", "--source", f"door={source}", "--publish", "none", "--quiet", "--show",
            "--output-video", str(video), "--timeline", str(timeline), *[a for s in EAGER for a in ("--set", s)]),
        capture_output=True, text=True, timeout=180, cwd=REPO, env={**env, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stderr
    return result, video, timeline


def test_annotated_video_has_every_frame_at_source_size(annotated_run, video_file):
    result, video, _ = annotated_run
    frames = read_frames(video)
    assert len(frames) == len(read_frames(video_file)) == 120, result.stderr[-2000:]  # offline: every frame
    assert {frame.shape for frame in frames} == {(240, 320, 3)}
    assert cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FPS) == pytest.approx(30.0)
    assert f"annotated video {video}: 120 frames written" in result.stderr and "skipped" not in result.stderr, result.stderr[-2000:]


def test_labels_are_drawn_over_the_source_frames(annotated_run, video_file):
    _, video, _ = annotated_run
    drawn, source = read_frames(video), read_frames(video_file)
    for index in (0, 60, 119):  # before the first clip ("waiting ..."), and with scores
        difference = np.abs(drawn[index].astype(int) - source[index].astype(int))
        assert difference[2:14, 2:60].mean() > 30, "labels (or 'waiting for the first clip') at the top left"
        assert difference[-12:-2, 2:40].mean() > 30, "the stream's name at the bottom left"
        assert difference[60:200, 200:].mean() < 8, "away from the panels the frame is the source frame"


def test_timeline_image_is_written(annotated_run):
    result, _, timeline = annotated_run
    image = cv2.imread(str(timeline))
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 800
    assert image.std() > 10, "the figure has content, not a blank canvas"
    assert f"timeline written to {timeline} with ground truth from {timeline.parent / 'clip.json'}" in result.stderr


def test_show_without_display_says_so_once_and_the_run_continues(annotated_run):
    result, video, _ = annotated_run
    lines = [line for line in result.stderr.splitlines() if "--show" in line]
    assert len(lines) == 1 and "--show: no display available" in lines[0]
    assert "continuing without a window" in lines[0]
    assert video.stat().st_size > 0


@pytest.mark.parametrize("flag, path, message", [
    ("--output-video", "{file}/out.mp4", "cannot write --output-video"),
    ("--output-video", "{dir}/out.txt", "use a file name ending in .mp4"),
    ("--timeline", "{file}/timeline.png", "cannot write --timeline"),
    ("--timeline", "{dir}/timeline.xyz", "use a file name ending in .png"),
])
def test_bad_output_path_is_one_clear_line_before_the_run(tmp_path, video_file, flag, path, message):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    result = run_cli("run", "--source", str(video_file), "--publish", "none", "--quiet",
                     flag, path.format(file=a_file, dir=tmp_path), timeout=60)
    assert result.returncode == 2 and message in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in result.stderr
    assert "engine backend" not in result.stderr, "paths are checked before the model is loaded"


def test_output_video_refuses_to_overwrite_its_source(tmp_path):
    video = write_video(tmp_path / "clip.mp4", frames=8)
    result = run_cli("run", "--source", str(video), "--publish", "none", "--output-video", str(video))
    assert result.returncode == 2 and "is also a --source" in result.stderr


# --------------------------------------------------------------------------- in-process


def test_each_frame_shows_the_latest_hop_ending_at_or_before_it(tmp_path, monkeypatch):
    """Offline the capture runs a ring buffer ahead of inference; the overlays must not lag by it."""
    sources = {"a": write_video(tmp_path / "a.mp4", frames=72), "b": write_video(tmp_path / "b.mp4", frames=56, seed=1)}
    paths = video_paths(tmp_path / "out.mp4", list(sources))
    assert paths == {"a": tmp_path / "out-a.mp4", "b": tmp_path / "out-b.mp4"}
    paired: dict[str, list] = {"a": [], "b": []}
    real_draw = annotate.draw_overlay

    def recording_draw(frame, stream_id, overlay):
        paired[stream_id].append(overlay.end_index if overlay else None)
        return real_draw(frame, stream_id, overlay)

    monkeypatch.setattr(annotate, "draw_overlay", recording_draw)
    annotator = Annotator(list(sources), paths, show=False)
    run_pipeline(sources, annotator=annotator)
    for stream, frames in (("a", 72), ("b", 56)):
        # A 32-frame window and hop 8: hops end at frames 31, 39, 47, ...
        expected = [None if i < 31 else 31 + (i - 31) // 8 * 8 for i in range(frames)]
        assert paired[stream] == expected
        assert len(read_frames(paths[stream])) == frames


def stats_of(stream_id: str, offline: bool = False):
    """What the annotator reads of the pipeline's figures (`Pipeline.stats`), for tests without a pipeline."""
    return lambda: {stream_id: SimpleNamespace(source_fps=30.0, offline=offline)}


def test_when_drawing_falls_behind_the_tap_drops_frames_and_never_blocks(tmp_path, caplog):
    path = tmp_path / "cam.mp4"
    annotator = Annotator(["cam"], {"cam": path}, show=False)
    annotator.start(stats_of("cam"))
    frame = np.zeros((48, 64, 3), np.uint8)
    offered = LIVE_QUEUE_FRAMES + 50
    started = time.monotonic()
    for index in range(offered):  # no hop ever comes, so every frame waits for its overlay until close()
        annotator.frame_tap("cam", index, index / 30, frame)
    assert time.monotonic() - started < 1.0, "the tap must hand off, not wait for drawing"
    with caplog.at_level("INFO"):
        annotator.close()
    skipped = annotator.streams["cam"].skipped
    assert skipped in (49, 50)  # the queue's worth is kept, plus the frame being drawn if it was taken in time
    assert len(read_frames(path)) == offered - skipped
    assert f"{offered - skipped} frames written, skipped {skipped}" in caplog.text


def test_offline_queue_holds_more_frames_so_a_starved_drawer_catches_up(tmp_path):
    annotator = Annotator(["file"], {"file": tmp_path / "file.mp4"}, show=False)
    annotator.start(stats_of("file", offline=True))
    frame = np.zeros((48, 64, 3), np.uint8)
    for index in range(10 * LIVE_QUEUE_FRAMES):  # again no hop: all wait until close()
        annotator.frame_tap("file", index, index / 30, frame)
    annotator.close()
    assert annotator.streams["file"].skipped == 0
    assert len(read_frames(tmp_path / "file.mp4")) == 10 * LIVE_QUEUE_FRAMES


def test_timeline_segments_are_the_emitted_actions(tmp_path, video_file):
    recorder = TimelineRecorder()
    events = run_pipeline({"door": video_file}, recorder=recorder)
    ends = [e for e in events if e["type"] == "action_end"]
    assert ends, "EAGER thresholds start and end actions on any clip"
    recording = recorder.streams["door"]
    recorded = sorted((s.start, s.end, s.label) for s in recording.segments())
    emitted = sorted((e["started_at"], e["clip_end"], e["label"]) for e in ends)
    assert [label for *_, label in recorded] == [label for *_, label in emitted]
    assert np.allclose([times for *times, _ in recorded], [times for *times, _ in emitted], atol=1e-3)
    assert len(recording.times) == 12 and len(recording.scores) == 12
    path = tmp_path / "timeline.png"
    recorder.write(path, ground_truth={"door": [Segment(0.5, 2.0, "waving"), Segment(2.5, 3.5, "jumping")]})
    image = cv2.imread(str(path))
    assert image is not None and image.std() > 10


def test_a_stream_that_changes_resolution_keeps_its_first_size_in_the_video(tmp_path):
    path = tmp_path / "cam.mp4"
    annotator = Annotator(["cam"], {"cam": path}, show=False)
    annotator.start(stats_of("cam"))
    for index, size in enumerate([(48, 64)] * 5 + [(60, 80)] * 5):  # a camera that came back at another size
        annotator.frame_tap("cam", index, index / 30, np.full((*size, 3), 100, np.uint8))
    annotator.close()
    frames = read_frames(path)
    assert len(frames) == 10 and {frame.shape for frame in frames} == {(48, 64, 3)}


def test_a_video_writer_that_breaks_mid_run_is_one_line_and_the_frames_keep_flowing(tmp_path, monkeypatch, caplog):
    """A disk that fills up under the annotated video: one error line (the traceback only at
    debug level), and the tap keeps taking frames, so capture and the events go on."""
    real_writer = cv2.VideoWriter

    class FillingDisk:
        def __init__(self, *args):
            self.inner, self.frames = real_writer(*args), 0

        def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
            return self.inner.isOpened()

        def write(self, image) -> None:
            self.frames += 1
            if self.frames > 3:
                raise cv2.error("OpenCV(4.x) ffmpeg: No space left on device")
            self.inner.write(image)

        def release(self) -> None:
            self.inner.release()

    monkeypatch.setattr(annotate.cv2, "VideoWriter", FillingDisk)
    annotator = Annotator(["cam"], {"cam": tmp_path / "cam.mp4"}, show=False)
    annotator.start(stats_of("cam", offline=True))
    with caplog.at_level("DEBUG", logger="streamrec"):
        for index in range(20):
            annotator.frame_tap("cam", index, index / 30, np.zeros((48, 64, 3), np.uint8))
        annotator.close()
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in errors] == [
        "annotating stream cam failed (error: OpenCV(4.x) ffmpeg: No space left on device); no more frames are drawn"]
    assert errors[0].exc_info is None  # no traceback on the terminal
    assert any(r.levelname == "DEBUG" and r.exc_info for r in caplog.records)
    assert annotator.streams["cam"].written == 3


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_window_that_cannot_open_says_so_and_closes_cleanly(caplog):
    """Here OpenCV is headless, so imshow fails the way it does on a machine without a GUI."""
    window = annotate.Window()
    window.start()
    window.show("cam", np.zeros((48, 64, 3), np.uint8))
    deadline = time.monotonic() + 5
    while "--show: cannot open a window" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)
    window.close()
    assert "--show: cannot open a window" in caplog.text and "continuing without it" in caplog.text
    assert not window.is_alive()


def test_the_timeline_draws_a_lane_per_person_in_per_person_mode(tmp_path):
    """Per-person hops: each track's hops and its actions recorded as segments, per track."""
    from types import SimpleNamespace

    from streamrec.pipeline import PersonView
    from streamrec.timeline import TimelineRecorder

    recorder = TimelineRecorder()
    thresholds = SimpleNamespace(labels=("idle", "waving"), enter=np.array([0.6, 0.6]), exit=np.array([0.4, 0.4]),
                                 trackable=np.array([False, True]))
    people_at = {1.0: [PersonView(1, (0, 0, 5, 5), [], {})], 2.0: [PersonView(1, (0, 0, 5, 5), [], {"waving": 2.0}),
                                                                  PersonView(2, (9, 9, 20, 20), [], {})],
                 3.0: [PersonView(2, (9, 9, 20, 20), [], {})]}
    for clip_end, people in people_at.items():
        view = SimpleNamespace(stream_id="room", clip_end=clip_end)
        recorder.observe(SimpleNamespace(view=view, scores=np.zeros(2), active={}, thresholds=thresholds,
                                         people=tuple(people)))
    recording = recorder.streams["room"]
    assert recording.tracks == {1: [1.0, 2.0], 2: [2.0, 3.0]}
    assert [(s.start, s.end, s.label) for s in recording.track_ended[1]] == [(2.0, 3.0, "waving")]  # gone at 3.0
    recorder.write(tmp_path / "people.png")
    assert (tmp_path / "people.png").stat().st_size > 1000
