"""Where training videos come from: procedural scenes, or a folder of the user's clips decoded
into memory.

- procedural (`ProceduralVideos`): scenes of `streamrec.procedural`, each a few seconds around
  one action; training, validation and test scenes come from different seed streams;
- a folder (`FolderVideos`): ``DIR/<class>/*.mp4``, one class per subfolder, each video
  entirely that class, split into training and validation files per class;
- group scenes (`GroupScenes`), for models that classify each person (an RoI head): rooms of
  `streamrec.procedural_group` with 2-4 people acting on their own, split like procedural scenes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from streamrec.config import ClipConfig
from streamrec.errors import StreamrecError
from streamrec.evaluation import Segment
from streamrec.procedural import BACKGROUND, LABELS, Scene, action_scene
from streamrec.procedural_group import GroupScene, group_scene
from streamrec.sources import VIDEO_SUFFIXES
from streamrec.training.windows import Video

# Training scenes cycle through the classes with background twice: streams get up after every
# fall and sit, and getting up is what the actions are most easily confused with.
TRAINING_SCENE_CYCLE = (*LABELS, BACKGROUND)
GROUP_SCENE_SECONDS = 20.0  # long enough for each person to walk in, act a few times and maybe leave


class VideoSet(Protocol):
    labels: list[str]  # class names in model output order
    background: str | None

    def __len__(self) -> int: ...

    def video(self, index: int) -> Video: ...


@dataclass(frozen=True)
class DecodedVideo:
    """A user's video held in memory, every frame one class."""

    path: Path
    pixels: np.ndarray  # uint8 [N, H, W, 3] RGB, short side already reduced to what training needs
    fps: float
    label: str

    @property
    def times(self) -> np.ndarray:
        return np.arange(len(self.pixels)) / self.fps

    @property
    def segments(self) -> list[Segment]:
        return [Segment(0.0, len(self.pixels) / self.fps, self.label)]

    def frame(self, index: int) -> np.ndarray:
        return self.pixels[index]


@dataclass
class ProceduralVideos:
    """Scenes of one split, seeded by (seed, split, index); classes take turns in ``cycle``."""

    labels: list[str]
    count: int
    seed: int
    split: int  # 0 train, 1 validation, 2 test
    difficulty: float = 1.0  # clutter and noise of the scenes (see `random_appearance`)
    cycle: tuple[str, ...] = LABELS
    background: str | None = BACKGROUND

    def __len__(self) -> int:
        return self.count

    def scene(self, index: int) -> Scene:
        seed = int(np.random.SeedSequence([self.seed, self.split, index]).generate_state(1)[0])
        return action_scene(seed, self.cycle[index % len(self.cycle)], self.difficulty)

    def video(self, index: int) -> Video:
        return self.scene(index)


@dataclass
class GroupScenes:
    """Rooms with several people, of one split, seeded by (seed, split, index); see `streamrec.procedural_group`."""

    labels: list[str]
    count: int
    seed: int
    split: int  # 0 train, 1 validation, 2 test
    difficulty: float = 1.0  # clutter, noise and blur of the room (see `group_scene`)
    duration_s: float = GROUP_SCENE_SECONDS
    background: str = BACKGROUND

    def __len__(self) -> int:
        return self.count

    def scene(self, index: int) -> GroupScene:
        seed = int(np.random.SeedSequence([self.seed, self.split, index]).generate_state(1)[0])
        return group_scene(seed, self.duration_s, self.difficulty)


@dataclass
class FolderVideos:
    labels: list[str]
    videos: list[DecodedVideo]
    background: str | None = None

    def __len__(self) -> int:
        return len(self.videos)

    def video(self, index: int) -> Video:
        return self.videos[index]


def procedural_splits(labels: list[str], seed: int, train_scenes: int, val_scenes: int) -> tuple[ProceduralVideos, ...]:
    _check_procedural_labels(labels)
    return (ProceduralVideos(labels, train_scenes, seed, 0, cycle=TRAINING_SCENE_CYCLE),
            ProceduralVideos(labels, val_scenes, seed, 1), ProceduralVideos(labels, val_scenes, seed, 2))


def group_splits(labels: list[str], seed: int, train_scenes: int, val_scenes: int) -> tuple[GroupScenes, ...]:
    """Training, validation and test rooms; the test split has as many scenes as validation."""
    _check_procedural_labels(labels)
    return tuple(GroupScenes(labels, count, seed, split)
                 for split, count in enumerate((train_scenes, val_scenes, val_scenes)))


def _check_procedural_labels(labels: list[str]) -> None:
    missing = [name for name in LABELS if name not in labels]
    if missing:
        raise StreamrecError(f"the config's label file lacks the procedural classes {', '.join(missing)}; "
                             "train procedural data with labels: actions")


def folder_splits(root: Path, clip: ClipConfig, val_fraction: float, seed: int,
                  assumed_fps: float) -> tuple[FolderVideos, FolderVideos]:
    """Decode ``root/<class>/*`` and split each class's files into training and validation."""
    if not root.is_dir():
        raise StreamrecError(f"data folder {root} does not exist; give a folder with one subfolder per class")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise StreamrecError(f"data folder {root} has no class subfolders; put each class's clips in "
                             f"{root}/<class name>/*.mp4")
    labels = [c.name for c in classes]
    rng = np.random.default_rng([seed, 4])
    train, val = [], []
    for folder in classes:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not files:
            raise StreamrecError(f"class folder {folder} has no videos ({', '.join(VIDEO_SUFFIXES)}); "
                                 "add clips or remove the folder")
        files = [files[i] for i in rng.permutation(len(files))]
        held_out = min(len(files) - 1, round(len(files) * val_fraction))
        decoded = [decode_video(f, folder.name, clip, assumed_fps) for f in files]
        val += decoded[:held_out]
        train += decoded[held_out:]
    if not val:
        raise StreamrecError(f"data folder {root}: no video is left to validate on (each class keeps at least one "
                             f"for training, and --val-fraction {val_fraction:g} holds out none); add clips to a "
                             "class folder or raise --val-fraction")
    return FolderVideos(labels, train), FolderVideos(labels, val)


def decode_video(path: Path, label: str, clip: ClipConfig, assumed_fps: float) -> DecodedVideo:
    """Every frame, reduced so the short side leaves room for zoom augmentation."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = fps if math.isfinite(fps) and 1.0 <= fps <= 1000.0 else assumed_fps
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            scale = clip.short_side * 1.25 / min(frame.shape[:2])
            if scale < 1:
                frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            frames.append(frame)
    finally:
        capture.release()
    if not frames:
        raise StreamrecError(f"cannot read video {path}; is it a video file OpenCV can decode?")
    return DecodedVideo(path, np.stack(frames), float(fps), label)
