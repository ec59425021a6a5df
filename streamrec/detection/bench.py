"""What a person detector costs per keyframe on this machine: ``python -m streamrec.detection.bench``.

Frames come from ``vtest.avi`` (Debian's ``opencv-doc``: real pedestrians, so the motion
detector has real blobs to box) where it is installed, else from the synthetic source; they
are resized to each size measured. The motion detector first sees ``warmup_s`` of frames, then
every third frame is a keyframe and the two between are observed (as a 30 fps stream at hop
8 fed about 10 frames a second), each call timed. The figures belong in BENCHMARKS.md.

``--picture FILE.png`` also draws what the motion detector and the tracker hold at ``--at``
seconds of the footage: each tracked person's box and track id, nothing else (vtest.avi has no
action labels, so none is drawn).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from streamrec.detection import Keyframe, create_detector
from streamrec.detection.config import DetectionConfig
from streamrec.errors import StreamrecError

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")  # Debian's opencv-doc
VIDEO_FPS = 10.0  # vtest.avi's; the synthetic frames are timed the same
SIZES = ((320, 240), (768, 576))


@dataclass(frozen=True)
class DetectorTiming:
    detector: str
    width: int
    height: int
    keyframes: int
    ms_per_keyframe: float  # median of the detect calls
    ms_per_observed_frame: float | None  # median of the observe calls; None: the detector keeps no background


def video_frames(count: int) -> tuple[list[np.ndarray], str]:
    """``count`` RGB frames of vtest.avi (from its start), or of the synthetic source without it."""
    frames = []
    if VTEST.is_file():
        capture = cv2.VideoCapture(str(VTEST))
        while len(frames) < count:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        capture.release()
        if len(frames) == count:
            return frames, VTEST.name
    from streamrec.sources import SyntheticSource

    source = SyntheticSource(width=768, height=576, fps=VIDEO_FPS, seed=0)
    source.open()
    return [source.render(index) for index in range(count)], "synthetic frames"


def bench_detectors(detectors: Iterable[str] = ("motion", "hog"), sizes: Iterable[tuple[int, int]] = SIZES,
                    keyframes: int = 20) -> list[DetectorTiming]:
    """Time each detector at each size (width, height) on ``keyframes`` keyframes."""
    config = DetectionConfig()
    warmup = int(np.ceil(config.motion.warmup_s * VIDEO_FPS)) + 1
    source, _ = video_frames(warmup + 3 * keyframes)
    timings = []
    for name in detectors:
        for width, height in sizes:
            frames = [cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in source]
            detector = create_detector(DetectionConfig(detector=name))
            for index in range(warmup):
                detector.observe("bench", frames[index], index / VIDEO_FPS)
            detect_ms, observe_ms = [], []
            for index in range(warmup, len(frames)):
                start = time.perf_counter()
                if (index - warmup) % 3 == 2:
                    detector.detect([Keyframe("bench", frames[index], index / VIDEO_FPS)])
                    detect_ms.append(1000 * (time.perf_counter() - start))
                elif detector.background_fps:
                    detector.observe("bench", frames[index], index / VIDEO_FPS)
                    observe_ms.append(1000 * (time.perf_counter() - start))
            timings.append(DetectorTiming(name, width, height, len(detect_ms), float(np.median(detect_ms)),
                                          float(np.median(observe_ms)) if observe_ms else None))
    return timings


def tracked_picture(seconds: float) -> tuple[np.ndarray, int, str]:
    """The frame at ``seconds`` (BGR) with the boxes and ids of the confirmed tracks seen on it, as
    per-person mode finds them (motion detector, keyframes every third frame, the frames between
    observed); and how many tracks that is."""
    from streamrec.annotate import draw_person
    from streamrec.detection.config import TrackerConfig
    from streamrec.detection import appearance
    from streamrec.detection.tracker import PersonTracker

    frames, frames_from = video_frames(int(seconds * VIDEO_FPS) + 1)
    detector, tracker = create_detector(DetectionConfig()), PersonTracker(TrackerConfig())
    last_keyframe = len(frames) - 1
    for index, frame in enumerate(frames):
        if (last_keyframe - index) % 3 == 0:
            found = detector.detect([Keyframe("vtest", frame, index / VIDEO_FPS)])[0]
            tracker.update(found, index / VIDEO_FPS, appearance.signatures(frame, found.boxes))
        else:
            detector.observe("vtest", frame, index / VIDEO_FPS)
    image = cv2.cvtColor(frames[-1], cv2.COLOR_RGB2BGR)
    seen = [track for track in tracker.tracks() if track.missed == 0]
    for track in seen:
        draw_person(image, track.id, tuple(track.box), None, [])
    return image, len(seen), frames_from


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", action="append", help="motion, hog or onnx:FILE (default: motion and hog)")
    parser.add_argument("--keyframes", type=int, default=20)
    parser.add_argument("--picture", type=Path, help="also write a PNG of the tracked people at --at seconds")
    parser.add_argument("--at", type=float, default=30.0, help="seconds into the footage for --picture (default 30)")
    args = parser.parse_args(argv)
    if args.at <= 0:
        parser.error(f"--at {args.at:g}: give a time into the footage in seconds, above 0 (e.g. --at 30)")
    if args.picture:
        image, people, frames_from = tracked_picture(args.at)
        cv2.imwrite(str(args.picture), image)
        print(f"wrote {args.picture}: {people} tracked people at {args.at:g} s of {frames_from}")
    _, frames_from = video_frames(1)
    print(f"frames: {frames_from}; OpenCV {cv2.__version__} with {cv2.getNumThreads()} threads")
    print("| detector | frame | ms per keyframe | ms per observed frame |\n|---|---|---|---|")
    for name in args.detector or ("motion", "hog"):
        try:
            rows = bench_detectors([name], keyframes=args.keyframes)
        except StreamrecError as err:
            print(f"| {name} | - | not run: {err} | |")
            continue
        for row in rows:
            observed = f"{row.ms_per_observed_frame:.1f}" if row.ms_per_observed_frame is not None else "-"
            print(f"| {row.detector} | {row.width}x{row.height} | {row.ms_per_keyframe:.1f} | {observed} |")


if __name__ == "__main__":
    main()
