"""Shared fixtures: real video files, free loopback ports, the CLI as a real subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from streamrec.bench.faults import RtspServer, rtsp_server_available
from streamrec.cli import QUIET_LIBRARIES
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


def assert_runs_without_torch(script: str) -> None:
    """Run ``script`` in a fresh interpreter on the checkout and check it ends without torch
    imported: the ONNX Runtime and TensorRT run paths never import it."""
    script += '\nimport sys\nassert "torch" not in sys.modules, "torch was imported"\nprint("ok")\n'
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "ok"


@pytest.fixture(scope="module")
def one_torch_thread():
    """One PyTorch thread for a module of small models (restored after it): on a shared, loaded CPU
    its OpenMP threads wait on each other for far longer than these models compute."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    # An in-process `cli.main` of an earlier test quiets the libraries through os.environ; each
    # command run here decides that for itself, as it would from a shell.
    env = {key: value for key, value in os.environ.items() if key not in QUIET_LIBRARIES}
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**env, "PYTHONUNBUFFERED": "1"})


@pytest.fixture
def loopback_port() -> int:
    return free_port()


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


def pytest_terminal_summary(terminalreporter):
    """The fault-injection report (tests/test_outages.py), when that test ran."""
    report = getattr(sys.modules.get("test_outages"), "FAULT_REPORT", None)
    if report:
        terminalreporter.section("faults injected")
        for line in report:
            terminalreporter.write_line(line)
