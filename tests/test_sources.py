"""Sources with real files: empty, undecodable, truncated and damaged videos are named by
streamrec in one line of its own, and the libraries' own log lines stay off the terminal unless
``--verbose``.

Real, flawed footage nobody here made comes from Debian's ``opencv-doc`` (``.ci/run``
installs it): ``Megamind_bugy.avi`` (a damaged AVI) and ``vtest.avi`` (surveillance footage).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import run_cli
from streamrec.errors import StreamrecError
from streamrec.sources import OpenCVSource, SourceUnavailable, SyntheticSource, create_source, parse_source

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
needs_opencv_doc = pytest.mark.skipif(not (OPENCV_DATA / "vtest.avi").is_file() and not os.environ.get("CI"),
                                      reason="needs Debian's opencv-doc (apt-get install opencv-doc)")
LIBRARY_LINES = ("[ WARN", "[ERROR", "[OPENCV", "moov atom", "Invalid data found")


def library_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(mark in line for mark in LIBRARY_LINES)]


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_all(path: Path) -> tuple[int, OpenCVSource]:
    return read_all_from(str(path))


def read_all_from(text: str) -> tuple[int, OpenCVSource]:
    source = create_source(parse_source(text))
    source.open()
    frames = 0
    while source.read() is not None:
        frames += 1
    source.close()
    return frames, source


def mjpeg_avi(path: Path, frames: int) -> Path:
    """An AVI whose header announces its frame count, as cameras' recorders write them."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120))
    for index in range(frames):
        image = (cv2.getGaussianKernel(120, 10 + index % 30) @ cv2.getGaussianKernel(160, 20).T)
        writer.write(cv2.cvtColor((image / image.max() * 255).astype("uint8"), cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def test_an_empty_file_is_refused_by_name_and_the_other_streams_go_on(tmp_path):
    empty = tmp_path / "zero.mp4"
    empty.write_bytes(b"")
    log = tmp_path / "events.jsonl"
    result = run_cli("run", "--source", "ok=synthetic:frames=60", "--source", f"bad={empty}", "--publish", "none",
                     "--quiet", "--event-log", str(log))
    assert result.returncode == 0, result.stderr
    assert not library_lines(result.stderr) and "Traceback" not in result.stderr
    assert f"stream bad: video file '{empty}' is empty (0 bytes)" in result.stderr
    bad = [e for e in events(log) if e["stream"] == "bad" and e["type"] == "status"]
    assert bad[-1]["state"] == "ended"
    assert bad[-1]["detail"] == (f"unavailable: video file '{empty}' is empty (0 bytes); check it was recorded or "
                                 "copied completely")
    ok = [e for e in events(log) if e["stream"] == "ok" and e["type"] == "status"]
    assert ok[-1]["state"] == "ended" and ok[-1]["frames_captured"] == 60


def test_library_log_lines_only_with_verbose(tmp_path):
    """A file FFmpeg cannot read: FFmpeg and OpenCV say so in their own words only when asked."""
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("this is not a video\n" * 100)
    quiet = run_cli("run", "--source", str(bogus), "--publish", "none", "--quiet", timeout=120)
    verbose = run_cli("run", "--source", str(bogus), "--publish", "none", "--quiet", "--verbose", timeout=120)
    for result in (quiet, verbose):
        assert result.returncode == 2 and "cannot decode video file" in result.stderr.splitlines()[-1], result.stderr
    assert not library_lines(quiet.stderr), quiet.stderr
    assert library_lines(verbose.stderr), verbose.stderr


def test_a_truncated_file_says_it_ended_early(tmp_path):
    whole = mjpeg_avi(tmp_path / "whole.avi", 120)
    frames, source = read_all(whole)
    assert frames == 120 and source.ended_early is None
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    frames, source = read_all(cut)
    assert 0 < frames < 100
    assert source.ended_early == (f"ended after {frames} of the 120 frames its container announces; the file is "
                                  "truncated or damaged")
    # A run says so too: in the stream's last status and in one warning line.
    log = tmp_path / "events.jsonl"
    result = run_cli("run", "--source", f"cut={cut}", "--publish", "none", "--quiet", "--event-log", str(log))
    assert result.returncode == 0, result.stderr
    last = [e for e in events(log) if e["type"] == "status"][-1]
    assert last["state"] == "ended" and last["detail"] == f"end of stream: {source.ended_early}"
    assert f"stream cut ended early: {source.ended_early}" in result.stderr


def test_an_empty_file_fails_to_open_for_good(tmp_path):
    empty = tmp_path / "zero.mp4"
    empty.write_bytes(b"")
    source = create_source(parse_source(str(empty)))
    with pytest.raises(SourceUnavailable, match=r"is empty \(0 bytes\)") as err:
        source.open()
    assert err.value.permanent


@pytest.fixture
def file_server(tmp_path):
    """A real HTTP server on loopback serving ``tmp_path/served`` (as ``python -m http.server`` does)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(QuietFiles, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_a_video_file_served_over_http_plays_once_like_a_file(file_server, tmp_path):
    """Its end is the end of the stream: reopening it as a dropped camera would replay it from
    the start, again and again, each time with the same events."""
    folder, base = file_server
    mjpeg_avi(folder / "clip.avi", 120)
    source = create_source(parse_source(f"{base}/clip.avi"))
    assert source.live and source.reconnectable  # a URL could be a camera until it has opened
    source.open()
    assert not source.live and not source.reconnectable
    frames = 0
    while source.read() is not None:
        frames += 1
    source.close()
    assert frames == 120 and source.ended_early is None

    whole = (folder / "clip.avi").read_bytes()
    (folder / "cut.avi").write_bytes(whole[: len(whole) // 2])
    log = tmp_path / "events.jsonl"
    result = run_cli("run", "--source", f"door={base}/clip.avi", "--source", f"cut={base}/cut.avi", "--publish",
                     "none", "--quiet", "--event-log", str(log), "--set", "reconnect.initial_delay_s=0.1", timeout=300)
    assert result.returncode == 0, result.stderr
    statuses = {stream: [e for e in events(log) if e["stream"] == stream and e["type"] == "status"]
                for stream in ("door", "cut")}
    assert not [e for e in statuses["door"] + statuses["cut"] if e["state"] == "reconnecting"]
    assert statuses["door"][-1]["state"] == "ended" and statuses["door"][-1]["detail"] == "end of stream"
    assert statuses["door"][-1]["frames_captured"] == 120  # offline, like a local file: every frame
    assert statuses["cut"][-1]["state"] == "ended"
    assert statuses["cut"][-1]["detail"].startswith("end of stream: ended after ")
    assert "stream cut ended early" in result.stderr


def test_a_percent_encoded_password_opens_a_source_behind_basic_auth(tmp_path):
    """What the refusal of a password holding '/', '?' or '#' tells the user to type works: FFmpeg
    decodes percent-encoded credentials (a real HTTP server on loopback that requires them)."""
    import base64

    video = mjpeg_avi(tmp_path / "clip.avi", 30).read_bytes()
    wanted = "Basic " + base64.b64encode(b"admin:pa/ss#1").decode()

    class Guarded(QuietFiles):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.headers.get("Authorization") != wanted:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="cam"')
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(video)))
            self.end_headers()
            self.wfile.write(video)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Guarded)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"127.0.0.1:{server.server_address[1]}/clip.avi"
        with pytest.raises(StreamrecError, match=r"percent-encode them \(/ as %2F, \? as %3F, # as %23"):
            parse_source(f"http://admin:pa/ss#1@{base}")
        frames, source = read_all_from(f"http://admin:pa%2Fss%231@{base}")
        assert frames == 30 and source.ended_early is None
        wrong = create_source(parse_source(f"http://admin:nope@{base}"))
        with pytest.raises(SourceUnavailable):
            wrong.open()
    finally:
        server.shutdown()
        server.server_close()


class MjpegCamera(http.server.BaseHTTPRequestHandler):
    """An HTTP camera's MJPEG stream (multipart/x-mixed-replace), as IP cameras serve it: no end announced."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        try:
            for index in range(200):
                jpeg = cv2.imencode(".jpg", np.full((120, 160, 3), index % 250, np.uint8))[1].tobytes()
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                                 + jpeg + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args) -> None:
        pass


def test_a_cameras_mjpeg_stream_over_http_stays_a_live_stream():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MjpegCamera)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = create_source(parse_source(f"http://127.0.0.1:{server.server_address[1]}/video.mjpg"))
        source.open()
        assert source.read() is not None
        assert source.live and source.reconnectable  # a drop is reopened, as for any camera
        source.close()
    finally:
        server.shutdown()
        server.server_close()


@needs_opencv_doc
def test_real_surveillance_footage_reads_to_its_end():
    frames, source = read_all(OPENCV_DATA / "vtest.avi")
    capture = cv2.VideoCapture(str(OPENCV_DATA / "vtest.avi"))
    assert frames == int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) and source.ended_early is None


@needs_opencv_doc
def test_a_real_damaged_avi_runs_beside_good_footage(tmp_path):
    log = tmp_path / "events.jsonl"
    result = run_cli("run", "--source", f"damaged={OPENCV_DATA / 'Megamind_bugy.avi'}", "--source",
                     f"street={OPENCV_DATA / 'vtest.avi'}", "--publish", "none", "--quiet", "--event-log", str(log),
                     timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and not library_lines(result.stderr), result.stderr
    for stream, frames in (("damaged", 270), ("street", 795)):  # every frame its container announces
        statuses = [e for e in events(log) if e["stream"] == stream and e["type"] == "status"]
        assert statuses[-1]["state"] == "ended" and statuses[-1]["detail"] == "end of stream"
        assert statuses[-1]["frames_captured"] == frames


@pytest.mark.parametrize("size, seed", [((320, 240), 0), ((17, 31), 5)])
def test_synthetic_frames_are_the_drifting_gradient_and_the_bouncing_square(size, seed):
    """Each frame as the source's docstring draws it: red and green are a diagonal gradient (green's
    flipped upside down) drifting by 3 and 3 // 2 a frame, wrapping at 256; blue is 96; one square
    of one colour moves over it."""
    width, height = size
    source = SyntheticSource(width, height, seed=seed)
    source.open()
    y, x = np.mgrid[:height, :width]
    gradient = (y * 255 // (height - 1) + x * 255 // (width - 1)) // 2
    side = max(4, min(width, height) // 6)
    for index in (0, 1, 85, 86, 300):
        frame = source.render(index)
        shift = index * 3 % 256
        expected = np.stack([(gradient + shift) % 256, (gradient[::-1] + shift // 2) % 256,
                             np.full_like(gradient, 96)], axis=-1)
        differs = np.any(frame != expected, axis=-1)
        rows, cols = np.nonzero(differs)
        assert frame.shape == (height, width, 3) and frame.dtype == np.uint8
        # only the square differs from the background, and it is one colour
        assert rows.max() - rows.min() < side and cols.max() - cols.min() < side
        assert len(np.unique(frame[differs], axis=0)) == 1


def test_a_synthetic_camera_told_to_start_later_delivers_its_first_frame_that_much_later():
    import time

    waited = {}
    for start in (0.0, 0.3):
        source = create_source(parse_source(f"synthetic:size=32x32,fps=30,frames=3,start={start:g}"))
        source.open()
        opened = time.monotonic()
        frame, timestamp = source.read()
        waited[start] = time.monotonic() - opened
        assert timestamp == 0.0 and frame.shape == (32, 32, 3)  # its clock starts at its first frame
        assert source.read()[1] == pytest.approx(1 / 30)
    assert waited[0.0] < 0.2 <= 0.3 <= waited[0.3] + 0.01
