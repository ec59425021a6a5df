"""Shared fixtures: real video files, free loopback ports, the CLI as a real subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from streamrec.sources import SyntheticSource

REPO = Path(__file__).resolve().parent.parent


def write_video(path: Path, frames: int, size=(320, 240), fps: float = 30.0, seed: int = 0) -> Path:
    """A real MP4 file (mpeg4) of moving synthetic content."""
    source = SyntheticSource(width=size[0], height=size[1], fps=fps, seed=seed)
    source.open()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for index in range(frames):
        writer.write(cv2.cvtColor(source.render(index), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture
def engine_dir(tmp_path, monkeypatch) -> Path:
    """An empty engine cache (``STREAMREC_ENGINE_DIR``) for one test: exports and builds land
    there, never in the checkout's ``engines/``."""
    monkeypatch.setenv("STREAMREC_ENGINE_DIR", str(tmp_path / "engines"))
    return tmp_path / "engines"


@pytest.fixture(scope="session")
def video_file(tmp_path_factory) -> Path:
    """Four seconds at 30 fps."""
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames=120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "run_stream.py"), *args]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture
def loopback_port() -> int:
    return free_port()


class RtspServer:
    """GStreamer's RTSP server in its own process, on loopback; can be killed and restarted."""

    SCRIPT = REPO / "tests" / "rtsp" / "rtsp_server.py"

    def __init__(self, port: int):
        self.port = port
        self.process: subprocess.Popen | None = None

    def url(self, credentials: str = "") -> str:
        return f"rtsp://{credentials}127.0.0.1:{self.port}/cam"

    def start(self, size: str = "320x240") -> None:
        self.process = subprocess.Popen(["/usr/bin/python3", str(self.SCRIPT), str(self.port), "/cam", size],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"RTSP server did not start: {line} {self.process.stderr.read()}")

    def pause(self) -> None:
        """Freeze the server without closing its connections: a stall, as a hung camera does."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)
            self.process = None


def rtsp_server_available() -> bool:
    check = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    return Path("/usr/bin/python3").exists() and subprocess.run(["/usr/bin/python3", "-c", check],
                                                                capture_output=True).returncode == 0


@pytest.fixture
def rtsp_server():
    if not rtsp_server_available():
        if os.environ.get("STREAMREC_REQUIRE_RTSP"):
            pytest.fail("GStreamer's RTSP server is required (CI installs it: see .ci/run)")
        pytest.skip("GStreamer RTSP server not installed (apt: gir1.2-gst-rtsp-server-1.0 python3-gi "
                    "gstreamer1.0-plugins-ugly gstreamer1.0-plugins-good)")
    server = RtspServer(free_port())
    server.start()
    yield server
    server.stop()
