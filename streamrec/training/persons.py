"""Training data for models that classify each person (an RoI head): clips of group scenes with
the people on their keyframe.

A clip is cut as the streaming scheduler cuts it (`cut_clip`, `sampling.clip_indices`) and
letterboxed as capture fits frames for person mode (``clip.fit: pad``). Its keyframe is the
middle Fast frame (`keyframe`: AVA's and PySlowFast's centre frame); the people visible on it
are the clip's boxes, mapped into the model input's pixels with `frame_fit`, each with its label
at that moment as a multi-hot target (AVA's labels; one per person here). Training jitters the
boxes (detectors never draw ground truth's boxes) and favours keyframes where someone acts:
three in four are drawn on an action piece of a class chosen uniformly among those the scene has,
so short, rare actions (falls, sitting down) are trained on about as often as walks.

Which keyframe, boxes and augmentation depend only on (seed, epoch, position), as for whole-clip
training, so a resumed run draws the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from streamrec.config import ClipConfig
from streamrec.evaluation_persons import PersonBox
from streamrec.procedural_group import GroupScene
from streamrec.sampling import clip_duration, clip_indices, fast_offsets, keyframe_position
from streamrec.training.clips import Augmentation, cut_clip
from streamrec.training.data import GroupScenes
from streamrec.training.model import engine_boxes
from streamrec.training.windows import ACTION_WINDOW_RATE
from streamrec.transforms import frame_fit

BOX_JITTER = 0.1  # each box edge moves by up to this share of the box's width or height
KEYFRAME_TRIES = 8  # draws of an action keyframe before settling for any keyframe with people on it


def keyframe(clip: ClipConfig, indices: np.ndarray) -> int:
    """The keyframe of a clip whose Fast frames are ``indices``: the middle one."""
    return int(indices[keyframe_position(clip)])


def fast_indices(scene: GroupScene, clip: ClipConfig, end: int) -> np.ndarray:
    """The Fast frames of the clip ending at frame ``end``, as a stream picks them."""
    return clip_indices(clip, scene.fps, end, 0, lambda idx: scene.times[idx])


def first_full_end(scene: GroupScene, clip: ClipConfig) -> int:
    """The first frame a stream's clip can end on with a full clip of history behind it."""
    return int(np.searchsorted(scene.times, scene.times[0] + clip_duration(clip) - 1e-6))


def end_for_keyframe(scene: GroupScene, clip: ClipConfig, frame: int) -> int | None:
    """The first clip end (with full history) whose keyframe is ``frame`` or later; None past the scene."""
    first = first_full_end(scene, clip)
    lag_s = (clip.span - 1 - fast_offsets(clip)[keyframe_position(clip)]) / clip.train_fps
    for end in range(max(first, frame), min(scene.num_frames, frame + int(np.ceil(lag_s * scene.fps)) + 2)):
        if keyframe(clip, fast_indices(scene, clip, end)) >= frame:
            return end
    return None


@dataclass(frozen=True)
class PersonClip:
    """One sample: a fitted clip and the people on its keyframe."""

    frames: np.ndarray  # uint8 [T, crop, crop, 3]
    boxes: np.ndarray  # float32 [K, 4], x1, y1, x2, y2 in input pixels
    targets: np.ndarray  # float32 [K, num_classes], multi-hot
    people: tuple[PersonBox, ...]  # the ground truth, in source pixels
    keyframe: int


def person_clip(scene: GroupScene, end: int, clip: ClipConfig, labels: list[str],
                augment: Augmentation | None = None, rng: np.random.Generator | None = None) -> PersonClip:
    """The clip ending at frame ``end`` with the people on its keyframe; boxes jittered when ``rng`` is given."""
    frame = keyframe(clip, fast_indices(scene, clip, end))
    people = scene.people(frame)
    width, height = scene.size
    geometry = frame_fit(width, height, clip.short_side, clip.crop_size, clip.fit)
    boxes = geometry.to_input(np.array([p.box for p in people], np.float32).reshape(-1, 4))
    if rng is not None:
        picture = geometry.to_input(np.array([[0, 0, width, height]], np.float32))[0]
        boxes = jittered(boxes, rng, picture)
    targets = np.zeros((len(people), len(labels)), np.float32)
    for row, person in enumerate(people):
        targets[row, labels.index(person.label)] = 1.0
    return PersonClip(cut_clip(scene, end, clip, augment), boxes, targets, people, frame)


def jittered(boxes: np.ndarray, rng: np.random.Generator, picture: np.ndarray) -> np.ndarray:
    """Each edge moved by up to `BOX_JITTER` of the box's width or height, then cut to ``picture``
    (x1, y1, x2, y2): a box keeps at least 80% of its size and stays on the frame, as a detector's would."""
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    moved = boxes + rng.uniform(-BOX_JITTER, BOX_JITTER, boxes.shape) * np.stack([width, height, width, height], 1)
    return np.clip(moved, np.tile(picture[:2], 2), np.tile(picture[2:], 2)).astype(np.float32)


def choose_clip_end(scene: GroupScene, clip: ClipConfig, background: str, rng: np.random.Generator) -> int:
    """A clip end whose keyframe has someone on it: mostly someone acting (see the module docstring)."""
    first = keyframe(clip, fast_indices(scene, clip, first_full_end(scene, clip)))
    last = keyframe(clip, fast_indices(scene, clip, scene.num_frames - 1))
    pieces = [(actor.person, piece) for actor in scene.actors for piece in actor.script.pieces
              if piece.label != background and piece.end * scene.fps > first and piece.start * scene.fps < last]
    if pieces and rng.random() < ACTION_WINDOW_RATE:
        classes = sorted({piece.label for _, piece in pieces})
        label = classes[int(rng.integers(len(classes)))]
        chosen = [(person, piece) for person, piece in pieces if piece.label == label]
        for _ in range(KEYFRAME_TRIES):
            person, piece = chosen[int(rng.integers(len(chosen)))]
            start, stop = max(piece.start * scene.fps, first), min(piece.end * scene.fps, last)
            frame = int(np.clip(np.floor(rng.uniform(start, stop)), first, last))
            if any(p.person == person and p.label == label for p in scene.people(frame)):
                return end_for_keyframe(scene, clip, frame)  # type: ignore[return-value]
    while True:  # people are in view for most of every scene, so this ends
        frame = int(rng.integers(first, last + 1))
        if scene.people(frame):
            return end_for_keyframe(scene, clip, frame)  # type: ignore[return-value]


class PersonClips(torch.utils.data.Dataset):
    """One epoch's training samples: item i is a keyframe of scene ``i mod len(scenes)``, augmented.

    Items are ``(frames, boxes, targets)`` arrays; `collate_person_clips` batches them.
    """

    def __init__(self, scenes: GroupScenes, clip: ClipConfig, clips_per_epoch: int, seed: int, epoch: int):
        self.scenes, self.clip, self.size, self.seed, self.epoch = scenes, clip, clips_per_epoch, seed, epoch
        self.order = np.random.default_rng([seed, 5, epoch]).permutation(
            np.resize(np.arange(len(scenes)), clips_per_epoch))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 6, self.epoch, i])
        scene = self.scenes.scene(int(self.order[i]))
        end = choose_clip_end(scene, self.clip, self.scenes.background, rng)
        sample = person_clip(scene, end, self.clip, self.scenes.labels, Augmentation.draw(rng), rng)
        return sample.frames, sample.boxes, sample.targets


def collate_person_clips(items: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clips ``uint8 [B, T, H, W, 3]``, boxes ``[N, 5]`` (clip index in the batch, x1, y1, x2, y2) and
    targets ``[N, C]``: the engine's layout."""
    frames = torch.from_numpy(np.stack([frames for frames, _, _ in items]))
    targets = torch.from_numpy(np.concatenate([targets for _, _, targets in items]))
    return frames, engine_boxes([boxes for _, boxes, _ in items]), targets


@dataclass(frozen=True)
class KeyframeSet:
    """Held-out keyframes (as the frame AP scores them) with people on them."""

    keys: list[tuple[int, int]]  # (scene index, keyframe)
    clips: np.ndarray  # uint8 [N, T, H, W, 3]
    boxes: list[np.ndarray]  # per clip, float32 [K, 4] in input pixels
    people: list[tuple[PersonBox, ...]]  # per clip, the ground truth in source pixels

    @property
    def box_count(self) -> int:
        return sum(len(b) for b in self.boxes)


class _RenderedOnce:
    """A scene whose frames are rendered once: neighbouring keyframes' clips share most of them.
    Everything but `frame` is the scene's."""

    def __init__(self, scene: GroupScene):
        self._scene, self._frames = scene, {}

    def __getattr__(self, name: str):
        return getattr(self._scene, name)

    def frame(self, index: int) -> np.ndarray:
        if index not in self._frames:
            self._frames[index] = self._scene.frame(index)
        return self._frames[index]


def keyframe_set(scenes: GroupScenes, clip: ClipConfig) -> KeyframeSet:
    """The keyframes the frame AP scores (`PersonTruth.keyframes`) that have people on them and a
    clip with full history behind them, unaugmented."""
    keys, clips, boxes, people = [], [], [], []
    for index in range(len(scenes)):
        scene = _RenderedOnce(scenes.scene(index))
        for frame, truth in scene.truth().keyframe_truth().items():
            end = end_for_keyframe(scene, clip, frame)
            if not truth or end is None or keyframe(clip, fast_indices(scene, clip, end)) != frame:
                continue
            sample = person_clip(scene, end, clip, scenes.labels)
            keys.append((index, frame))
            clips.append(sample.frames)
            boxes.append(sample.boxes)
            people.append(sample.people)
    return KeyframeSet(keys, np.stack(clips), boxes, people)
