"""Where frames come from: cameras, V4L2 devices, network streams, video files, synthetic content.

A source is opened and read on its stream's capture thread. ``read()`` returns an RGB frame
with the source's own timestamp, or ``None`` when the source has ended (a file) or dropped
(a camera or network stream, which the capture thread then reopens with backoff). A video file
served over HTTP is a file: once open, a source at an http(s) URL whose container announces a
frame count is read once like a local one (offline, or at its frame rate with ``--realtime``;
ended at its end), where reopening it as a dropped stream would replay it from the start, forever.
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
from urllib.parse import urlsplit

import numpy as np

from streamrec.errors import StreamrecError
from streamrec.redaction import redact, split_userinfo

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")
FILE_SERVING_SCHEMES = ("http", "https")  # where a URL may name a whole file rather than a camera's stream
URL_START = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
# OpenCV's frame count comes from the container (exact) or from duration x frame rate (an
# estimate): a file that ends more than this short of it ended early.
FRAME_COUNT_TOLERANCE = 0.02
# What a folder of recordings is searched for (training, distillation, calibration): the
# containers OpenCV's FFmpeg reads.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")


class FrameSource(Protocol):
    live: bool  # a camera or network stream: frames arrive in real time and can be missed (settled by `open`)
    reconnectable: bool  # reopen after a drop (cameras, network streams; settled by `open`)

    @property
    def fps(self) -> float | None: ...

    @property
    def ended_early(self) -> str | None:
        """Once `read` has returned None: why the source stopped short of its end (a truncated
        file), or None."""

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
    """What a ``--source`` names, checked as far as it can be without opening it: a bad URL or
    synthetic option is one line here, before anything starts."""
    text = str(text).strip()
    if not text:
        raise StreamrecError("empty source; pass a camera index, /dev/videoN, a URL, a video file or 'synthetic'")
    if text.isdigit():
        return SourceSpec("camera", text, f"camera {text}")
    if text == "synthetic" or text.startswith("synthetic:"):
        SyntheticSource.from_spec(text)  # its options are checked now, not on the capture thread
        return SourceSpec("synthetic", text, text)
    if text.startswith("/dev/video"):
        return SourceSpec("device", text, text)
    scheme = URL_START.match(text)
    if not scheme:
        return SourceSpec("file", text, text)
    name = scheme.group(1).lower()
    if name == "file":
        path = _file_url_path(text)
        return SourceSpec("file", path, path)
    if name not in NETWORK_SCHEMES:
        raise StreamrecError(f"source {redact(text)}: '{name}://' is not a source streamrec reads; use "
                             f"{', '.join(NETWORK_SCHEMES)}, a video file, a camera index or 'synthetic'")
    _check_url(text)
    return SourceSpec("network", text, redact(text))


def _check_url(url: str) -> None:
    """A URL the network sources can open at all: it parses, has a host, and any port is a number.
    Its user-info is split off first, by the rule the mask reads it by (`split_userinfo`), so that
    no message quotes a piece of a password; one holding '/', '?' or '#' is refused, as FFmpeg
    would take the host to start there."""
    userinfo, bare = split_userinfo(url)
    if userinfo and any(c in userinfo for c in "/?#"):
        raise StreamrecError(f"source {redact(url)}: its user name or password holds '/', '?' or '#', which end "
                             "a URL's host part for FFmpeg; percent-encode them (/ as %2F, ? as %3F, # as %23, "
                             "and a '%' itself as %25)")
    try:
        parts = urlsplit(bare)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number from 0 to 65535)
    except ValueError as exc:
        raise StreamrecError(f"source {redact(url)} is not a valid URL ({exc}); close the brackets around an IPv6 "
                             "address, give the port as a number and percent-encode '@', ':', '/' and '#' in "
                             "a user name or password") from None
    if not parts.netloc:
        raise StreamrecError(f"source {redact(url)} names no host; write it as SCHEME://HOST[:PORT]/PATH")


def _file_url_path(url: str) -> str:
    try:
        return urlsplit(url).path
    except ValueError as exc:
        raise StreamrecError(f"source {redact(url)} is not a valid file:// URL ({exc}); pass the file's path") from None


def create_source(spec: SourceSpec, open_timeout_s: float = 10.0, read_timeout_s: float = 5.0) -> FrameSource:
    if spec.kind == "synthetic":
        return SyntheticSource.from_spec(spec.target)
    if spec.kind == "file":
        path = Path(spec.target)
        if not path.is_file():
            raise StreamrecError(f"video file '{spec.display}' not found; check the path passed to --source")
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
        self._announced_frames: int | None = None  # a file's frame count, as its container gives it
        self._frames_read = 0
        self._ended_early: str | None = None

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def ended_early(self) -> str | None:
        """Why a file ended short of its end, once `read` has returned None: no frame decoded at
        all, or fewer frames than its container announces (truncated or damaged). None while it
        is read, for a file that ended where it should, and for live sources."""
        return self._ended_early

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
            self._check_file()
            capture = cv2.VideoCapture(self.spec.target, cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            raise SourceUnavailable(self._unavailable_message())
        fps = capture.get(cv2.CAP_PROP_FPS)
        self._fps = fps if math.isfinite(fps) and 1.0 <= fps <= 1000.0 else None
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        announced = int(count) if math.isfinite(count) and count >= 1 else None
        if self.live and announced and self.spec.kind == "network" and self._scheme() in FILE_SERVING_SCHEMES:
            self.live = self.reconnectable = False  # a file served over HTTP: a camera's stream has no end to announce
        if not self.live:
            self._announced_frames = announced
        self._frames_read, self._ended_early = 0, None
        self._capture = capture

    def _scheme(self) -> str:
        return urlsplit(self.spec.target).scheme.lower()

    def _check_file(self) -> None:
        """An empty file is refused by name: FFmpeg would only say "moov atom not found"."""
        try:
            empty = os.path.getsize(self.spec.target) == 0
        except OSError as exc:
            raise SourceUnavailable(f"cannot read video file '{self.spec.display}' ({exc.strerror}); check the "
                                    "path passed to --source", permanent=True) from None
        if empty:
            raise SourceUnavailable(f"video file '{self.spec.display}' is empty (0 bytes); check it was recorded "
                                    "or copied completely", permanent=True)

    def _unavailable_message(self) -> str:
        if self.spec.kind == "camera":
            return (f"no camera at index {self.spec.target}; check `ls /dev/video*` and that no other "
                    "program holds it, or pass another --source")
        if self.spec.kind == "device":
            return f"cannot open {self.spec.target}; check it exists and you may read it (group 'video')"
        if self.spec.kind == "network":
            return f"cannot open {self.spec.display}; check the URL, credentials and that the server is reachable"
        return f"cannot decode video file '{self.spec.display}'; check it is a video OpenCV/FFmpeg can read"

    def read(self) -> tuple[np.ndarray, float | None] | None:
        import cv2

        ok, frame = self._capture.read()
        if not ok or frame is None:
            if not self.live:
                self._ended_early = self._why_short()
            return None
        self._frames_read += 1
        position_ms = self._capture.get(cv2.CAP_PROP_POS_MSEC)
        timestamp = position_ms / 1000.0 if math.isfinite(position_ms) and position_ms > 0 else None
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), timestamp

    def _why_short(self) -> str | None:
        read, announced = self._frames_read, self._announced_frames
        if read == 0:
            return f"no frame of '{self.spec.display}' could be decoded; the file is damaged or not a video"
        if announced and read < announced * (1 - FRAME_COUNT_TOLERANCE) - 1:
            return (f"ended after {read} of the {announced} frames its container announces; the file is "
                    "truncated or damaged")
        return None

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class SyntheticSource:
    """Procedural moving content of any size and frame rate, paced like a camera.

    ``synthetic:size=640x480,fps=30,frames=300,seed=1`` (all keys optional). ``frames`` ends
    the stream after that many frames; without it the stream runs until stopped. ``start=0.1``
    delivers the first frame that many seconds after opening: independent cameras do not start,
    or fall due for their hops, all at one moment. Content: a drifting colour gradient with a
    bouncing square, so consecutive frames differ.
    """

    KEYS = ("size", "fps", "frames", "seed", "start")
    MAX_START_S = 10.0
    SIDES = (16, 7680)  # pixels, each side ...
    MAX_PIXELS = 7680 * 4320  # ... and at most an 8K frame in all
    FPS = (0.1, 1000.0)
    MAX_SEED = 2**32 - 1
    USAGE = "use synthetic:size=WxH,fps=N,frames=N,seed=N,start=SECONDS, e.g. synthetic:size=640x480,fps=30"

    def __init__(self, width: int = 320, height: int = 240, fps: float = 30.0, frames: int | None = None,
                 seed: int = 0, start: float = 0.0):
        self.live = True
        self.reconnectable = False
        self.width, self.height, self._fps = width, height, fps
        self.frames, self.seed, self.start_s = frames, seed, start
        self._index = 0
        self._start = 0.0

    @classmethod
    def from_spec(cls, text: str) -> "SyntheticSource":
        """The source a ``synthetic[:OPTIONS]`` spec describes; a bad option is one line naming it."""
        _, _, options = text.partition(":")
        kwargs: dict = {}
        for item in filter(None, options.split(",")):
            key, sep, value = item.partition("=")
            if not sep or key not in cls.KEYS:
                raise StreamrecError(f"bad synthetic source option '{item}'; {cls.USAGE}")
            try:
                kwargs.update(cls._option(key, value))
            except ValueError as exc:
                raise StreamrecError(f"synthetic source option '{item}': {exc}; {cls.USAGE}") from None
        return cls(**kwargs)

    @classmethod
    def _option(cls, key: str, value: str) -> dict:
        """One option's keyword arguments, in range, or ValueError saying what is allowed."""
        if key == "size":
            match = re.fullmatch(r"(\d+)x(\d+)", value)
            if not match:
                raise ValueError("size is WIDTHxHEIGHT in pixels")
            width, height = int(match.group(1)), int(match.group(2))
            low, high = cls.SIDES
            if not (low <= width <= high and low <= height <= high and width * height <= cls.MAX_PIXELS):
                raise ValueError(f"each side must be from {low} to {high} pixels, and the frame at most 7680x4320")
            return {"width": width, "height": height}
        if key in ("fps", "start"):
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"{key} is a number") from None
            low, high = cls.FPS if key == "fps" else (0.0, cls.MAX_START_S)
            if not low <= number <= high:  # also refuses nan
                raise ValueError(f"{key} must be from {low:g} to {high:g}")
            return {key: number}
        if not value.isdigit():
            raise ValueError(f"{key} is a whole number")
        number = int(value)
        if key == "frames" and number < 1:
            raise ValueError("frames must be at least 1 (leave it out for a stream that runs until stopped)")
        if key == "seed" and number > cls.MAX_SEED:
            raise ValueError(f"seed must be from 0 to {cls.MAX_SEED}")
        return {key: number}

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def ended_early(self) -> None:
        return None  # it ends after ``frames``, exactly

    def open(self) -> None:
        self._index = 0
        self._start = time.monotonic() + self.start_s  # frame i is due at _start + i / fps
        rng = np.random.default_rng(self.seed)
        self._colour = rng.integers(64, 255, 3).astype(np.uint8)
        self._velocity = rng.uniform(-4, 4, 2) + 1
        x = (np.arange(self.width) * 255 // max(1, self.width - 1)).astype(np.uint16)
        y = (np.arange(self.height) * 255 // max(1, self.height - 1)).astype(np.uint16)
        base = ((y[:, None] + x[None, :]) // 2).astype(np.uint8)  # uint16 while summing, not an int64 grid
        pixels = np.empty((self.height, self.width, 3), np.uint8)
        pixels[..., 0], pixels[..., 1], pixels[..., 2] = base, base[::-1], 96
        self._rows = pixels.reshape(self.height, self.width * 3)  # the gradient as rows of interleaved pixels

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
        # One contiguous add of a row of per-channel drifts (uint8 wraps at 256, so no modulo): a
        # capture thread renders every frame, and strided per-channel adds are several times slower
        # (BENCHMARKS.md, "where the CPU goes when streams are served").
        drift = np.tile(np.array([shift, shift // 2, 0], np.uint8), self.width)
        np.add(self._rows, drift, out=frame.reshape(self.height, self.width * 3))
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
