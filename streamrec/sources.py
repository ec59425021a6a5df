"""Where frames come from: cameras, V4L2 devices, network streams, video files, synthetic content.

A source is opened and read on its stream's capture thread. ``read()`` returns an RGB frame
with the source's own timestamp, or ``None`` when the source has ended (a file) or dropped
(a camera or network stream, which the capture thread then reopens with backoff).
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from streamrec.errors import StreamrecError

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
SECRET_QUERY_KEYS = {"password", "passwd", "pwd", "pass", "token", "key", "secret", "auth", "signature", "sig"}


def redact(source: str) -> str:
    """The source with any password or token replaced by ``***``, safe for logs and events."""
    parts = urlsplit(source)
    if parts.scheme.lower() not in NETWORK_SCHEMES:
        return source
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
    query = urlencode(
        [(k, "***" if k.lower() in SECRET_QUERY_KEYS else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class FrameSource(Protocol):
    live: bool  # a camera or network stream: frames arrive in real time and can be missed
    reconnectable: bool  # reopen after a drop (cameras, network streams)

    @property
    def fps(self) -> float | None: ...

    def open(self) -> None:
        """Open the source or raise `SourceUnavailable`."""

    def read(self) -> tuple[np.ndarray, float | None] | None:
        """An RGB frame ``[H, W, 3]`` and the source's timestamp in seconds (if it has one), or None."""

    def close(self) -> None: ...


class SourceUnavailable(Exception):
    """Opening failed; the message is one line, safe to show (credentials redacted).

    ``permanent`` says retrying cannot help now (no such device): a first open then fails at
    once instead of backing off, while a camera that vanishes mid-run is still waited for.
    """

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # camera | device | network | file | synthetic
    target: str  # what to open (raw, may hold credentials)
    display: str  # what to show (redacted)


def parse_source(text: str) -> SourceSpec:
    text = str(text).strip()
    if text.isdigit():
        return SourceSpec("camera", text, f"camera {text}")
    if text == "synthetic" or text.startswith("synthetic:"):
        return SourceSpec("synthetic", text, text)
    if text.startswith("/dev/video"):
        return SourceSpec("device", text, text)
    scheme = urlsplit(text).scheme.lower()
    if scheme in NETWORK_SCHEMES:
        return SourceSpec("network", text, redact(text))
    if scheme == "file":
        text = urlsplit(text).path
    return SourceSpec("file", text, text)


def create_source(spec: SourceSpec, open_timeout_s: float = 10.0, read_timeout_s: float = 5.0) -> FrameSource:
    if spec.kind == "synthetic":
        return SyntheticSource.from_spec(spec.target)
    if spec.kind == "file":
        path = Path(spec.target)
        if not path.is_file():
            raise StreamrecError(f"video file '{spec.target}' not found; check the path passed to --source")
        return OpenCVSource(spec, live=False, reconnectable=False)
    return OpenCVSource(spec, live=True, reconnectable=True, open_timeout_s=open_timeout_s,
                        read_timeout_s=read_timeout_s)


class OpenCVSource:
    """Cameras, V4L2 devices, network streams and files, decoded by OpenCV (FFmpeg or V4L2)."""

    def __init__(self, spec: SourceSpec, live: bool, reconnectable: bool, open_timeout_s: float = 10.0,
                 read_timeout_s: float = 5.0):
        self.spec = spec
        self.live = live
        self.reconnectable = reconnectable
        self._open_timeout_ms = int(open_timeout_s * 1000)
        self._read_timeout_ms = int(read_timeout_s * 1000)
        self._capture = None
        self._fps: float | None = None

    @property
    def fps(self) -> float | None:
        return self._fps

    def open(self) -> None:
        import cv2

        timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self._open_timeout_ms,
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, self._read_timeout_ms]
        if self.spec.kind == "camera":
            if sys.platform.startswith("linux") and not Path(f"/dev/video{self.spec.target}").exists():
                raise SourceUnavailable(self._unavailable_message(), permanent=True)
            capture = cv2.VideoCapture(int(self.spec.target))
        elif self.spec.kind == "device":
            capture = cv2.VideoCapture(self.spec.target, cv2.CAP_V4L2)
        elif self.spec.kind == "network":
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
            capture = cv2.VideoCapture(self.spec.target, cv2.CAP_FFMPEG, timeouts)
        else:
            capture = cv2.VideoCapture(self.spec.target, cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            raise SourceUnavailable(self._unavailable_message())
        fps = capture.get(cv2.CAP_PROP_FPS)
        self._fps = fps if math.isfinite(fps) and 1.0 <= fps <= 1000.0 else None
        self._capture = capture

    def _unavailable_message(self) -> str:
        if self.spec.kind == "camera":
            return (f"no camera at index {self.spec.target}; check `ls /dev/video*` and that no other "
                    "program holds it, or pass another --source")
        if self.spec.kind == "device":
            return f"cannot open {self.spec.target}; check it exists and you may read it (group 'video')"
        if self.spec.kind == "network":
            return f"cannot open {self.spec.display}; check the URL, credentials and that the server is reachable"
        return f"cannot decode video file '{self.spec.target}'; check it is a video OpenCV/FFmpeg can read"

    def read(self) -> tuple[np.ndarray, float | None] | None:
        import cv2

        ok, frame = self._capture.read()
        if not ok or frame is None:
            return None
        position_ms = self._capture.get(cv2.CAP_PROP_POS_MSEC)
        timestamp = position_ms / 1000.0 if math.isfinite(position_ms) and position_ms > 0 else None
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), timestamp

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class SyntheticSource:
    """Procedural moving content of any size and frame rate, paced like a camera.

    ``synthetic:size=640x480,fps=30,frames=300,seed=1`` (all keys optional). ``frames`` ends
    the stream after that many frames; without it the stream runs until stopped. Content: a
    drifting colour gradient with a bouncing square, so consecutive frames differ.
    """

    KEYS = ("size", "fps", "frames", "seed")

    def __init__(self, width: int = 320, height: int = 240, fps: float = 30.0, frames: int | None = None,
                 seed: int = 0):
        self.live = True
        self.reconnectable = False
        self.width, self.height, self._fps = width, height, fps
        self.frames, self.seed = frames, seed
        self._index = 0
        self._start = 0.0

    @classmethod
    def from_spec(cls, text: str) -> "SyntheticSource":
        _, _, options = text.partition(":")
        kwargs: dict = {}
        for item in filter(None, options.split(",")):
            key, sep, value = item.partition("=")
            if not sep or key not in cls.KEYS:
                raise StreamrecError(f"bad synthetic source option '{item}'; use synthetic:size=WxH,fps=N,frames=N,seed=N")
            try:
                if key == "size":
                    match = re.fullmatch(r"(\d+)x(\d+)", value)
                    if not match:
                        raise ValueError(value)
                    kwargs["width"], kwargs["height"] = int(match.group(1)), int(match.group(2))
                elif key == "fps":
                    kwargs["fps"] = float(value)
                else:
                    kwargs[key] = int(value)
            except ValueError:
                raise StreamrecError(f"bad value in synthetic source option '{item}'; e.g. size=640x480, fps=30") from None
        return cls(**kwargs)

    @property
    def fps(self) -> float:
        return self._fps

    def open(self) -> None:
        self._index = 0
        self._start = time.monotonic()
        rng = np.random.default_rng(self.seed)
        self._colour = rng.integers(64, 255, 3).astype(np.uint8)
        self._velocity = rng.uniform(-4, 4, 2) + 1
        y, x = np.mgrid[0:self.height, 0:self.width]
        base = ((x * 255 // max(1, self.width - 1)) + (y * 255 // max(1, self.height - 1))) // 2
        self._base = base.astype(np.uint8)  # uint8 sums wrap at 256: the drift below costs no modulo
        self._base_flipped = np.ascontiguousarray(self._base[::-1])

    def read(self) -> tuple[np.ndarray, float | None] | None:
        if self.frames is not None and self._index >= self.frames:
            return None
        timestamp = self._index / self._fps
        delay = self._start + timestamp - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        frame = self.render(self._index)
        self._index += 1
        return frame, timestamp

    def render(self, index: int) -> np.ndarray:
        shift = (index * 3) % 256
        frame = np.empty((self.height, self.width, 3), np.uint8)
        np.add(self._base, np.uint8(shift), out=frame[..., 0])
        np.add(self._base_flipped, np.uint8(shift // 2), out=frame[..., 1])
        frame[..., 2] = 96
        side = max(4, min(self.width, self.height) // 6)
        cx = _bounce(index * self._velocity[0], self.width - side)
        cy = _bounce(index * self._velocity[1], self.height - side)
        frame[cy:cy + side, cx:cx + side] = self._colour
        return frame

    def close(self) -> None:
        pass


def _bounce(position: float, limit: int) -> int:
    """Reflect a linear motion off the walls of ``[0, limit]``."""
    period = 2 * max(1, limit)
    p = position % period
    return int(p if p <= limit else period - p)
