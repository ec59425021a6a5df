"""What an epoch trains and validates on: ``clips_per_epoch`` augmented windows drawn from the
training videos, each video equally often, and each validation video's centred window.

Which window and which augmentation depend only on (seed, epoch, position), so a resumed run
draws the same clips as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from streamrec.config import ClipConfig
from streamrec.training.clips import Augmentation, cut_clip
from streamrec.training.data import GroupScenes, ProceduralVideos, VideoSet
from streamrec.training.windows import centre_window, choose_window

CURRICULUM_SHARE = 0.5  # procedural clutter and noise ramp from none to full over this share of the epochs


class TrainingClips(torch.utils.data.Dataset):
    """One epoch's training clips: item i is a random window of video ``i mod len(videos)``, augmented."""

    def __init__(self, videos: VideoSet, clip: ClipConfig, clips_per_epoch: int, seed: int, epoch: int):
        self.videos, self.clip, self.size, self.seed, self.epoch = videos, clip, clips_per_epoch, seed, epoch
        self.order = np.random.default_rng([seed, 5, epoch]).permutation(
            np.resize(np.arange(len(videos)), clips_per_epoch))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        rng = np.random.default_rng([self.seed, 6, self.epoch, i])
        index = int(self.order[i])
        video = self.videos.video(index)
        end, label = choose_window(video, self.clip, self.videos.background, rng)
        frames = cut_clip(video, end, self.clip, Augmentation.draw(rng))
        return frames, self.videos.labels.index(label)


def curriculum(videos: VideoSet | GroupScenes, epoch: int, epochs: int) -> VideoSet | GroupScenes:
    """Procedural scenes (single or group) start clean and reach full clutter and noise after
    `CURRICULUM_SHARE` of the epochs.

    A small network from scratch finds the figure's motion in a few hundred steps on plain
    backgrounds, and hardly at all when the first clips are fully cluttered.
    """
    if not isinstance(videos, (ProceduralVideos, GroupScenes)):
        return videos
    return replace(videos, difficulty=min(1.0, epoch / max(1.0, CURRICULUM_SHARE * epochs)))


def evaluation_clips(videos: VideoSet, clip: ClipConfig) -> tuple[np.ndarray, np.ndarray]:
    """Each video's centred window, unaugmented: ``uint8 [N, T, H, W, 3]`` and labels."""
    clips, targets = [], []
    for index in range(len(videos)):
        video = videos.video(index)
        end, label = centre_window(video, clip, videos.background)
        clips.append(cut_clip(video, end, clip))
        targets.append(videos.labels.index(label))
    return np.stack(clips), np.array(targets)
