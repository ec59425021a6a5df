"""What a run learns from and how it is judged, for each kind of network; `loop.train` runs either.

- `ClipTask`: one label a clip (softmax cross-entropy) on procedural scenes or a folder of the
  user's clips; judged by the accuracy of held-out clips;
- `PersonTask`: one row of labels per person box (an RoI head: sigmoid binary cross-entropy on
  multi-hot targets) on procedural group scenes with the ground-truth boxes of each clip's
  keyframe; judged by AVA's frame mAP on held-out keyframes with ground-truth boxes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from streamrec.config import REPO_ROOT, Config, load_labels
from streamrec.errors import StreamrecError
from streamrec.models import UInt8Clips
from streamrec.training.data import folder_splits, group_splits, procedural_splits
from streamrec.training.dataset import TrainingClips, curriculum, evaluation_clips
from streamrec.training.model import forward, predict, predict_boxes, takes_boxes
from streamrec.training.persons import KeyframeSet, PersonClips, collate_person_clips, keyframe_set
from streamrec.training.records import Accuracy, PersonScore, TrainSettings


class Task(Protocol):
    config: Config  # as the run saves it (a folder's labels file), but for the checkpoint it writes
    labels: list[str]
    data: str  # where the data came from, for the records
    summary: str  # what it trains and validates on, for the log

    def loader(self, epoch: int) -> torch.utils.data.DataLoader: ...

    def step(self, model: UInt8Clips, batch: Any) -> tuple[torch.Tensor, int, int]:
        """The batch's loss, how many samples (clips or boxes) it scored and how many of those it got right."""

    def validate(self, model: UInt8Clips) -> Accuracy | PersonScore: ...

    def test(self, model: UInt8Clips) -> Accuracy | PersonScore | None: ...


def task_for(config: Config, settings: TrainSettings) -> tuple[Task, TrainSettings]:
    """The task the config's network learns, and the settings with that task's defaults filled in."""
    persons = takes_boxes(config)
    settings = settings.resolved(persons=persons)
    return (PersonTask if persons else ClipTask)(config, settings), settings


class ClipTask:
    def __init__(self, config: Config, settings: TrainSettings):
        self.settings = settings
        if settings.data is None:
            self.labels = load_labels(config)
            self.train_set, self.val_set, self.test_set = procedural_splits(
                self.labels, settings.seed, settings.train_scenes, settings.val_scenes)
            self.data, what = "procedural", "procedural scenes"
        else:
            self.train_set, self.val_set = folder_splits(Path(settings.data), config.clip, settings.val_fraction,
                                                         settings.seed, config.pipeline.assumed_fps)
            self.test_set = None
            self.labels = self.train_set.labels
            labels_file = settings.out / "labels.txt"
            settings.out.mkdir(parents=True, exist_ok=True)
            labels_file.write_text("\n".join(self.labels) + "\n")
            config = config.replace(labels=portable(labels_file))
            self.data, what = settings.data, "videos"
        self.config = config
        self.summary = f"{len(self.train_set)} {what}, validating on {len(self.val_set)}"
        self.criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
        self._val: tuple | None = None

    def loader(self, epoch: int) -> torch.utils.data.DataLoader:
        s = self.settings
        clips = TrainingClips(curriculum(self.train_set, epoch, s.epochs), self.config.clip, s.clips_per_epoch, s.seed,
                              epoch)
        return torch.utils.data.DataLoader(clips, batch_size=s.batch_size, num_workers=s.workers, shuffle=False)

    def step(self, model: UInt8Clips, batch: Any) -> tuple[torch.Tensor, int, int]:
        frames, targets = batch
        logits = forward(model, self.config.clip, frames.numpy())
        return self.criterion(logits, targets), len(targets), int((logits.argmax(1) == targets).sum())

    def validate(self, model: UInt8Clips) -> Accuracy:
        if self._val is None:
            self._val = evaluation_clips(self.val_set, self.config.clip)
        return self._score(model, *self._val)

    def test(self, model: UInt8Clips) -> Accuracy | None:
        return None if self.test_set is None else self._score(model, *evaluation_clips(self.test_set, self.config.clip))

    def _score(self, model: UInt8Clips, clips, targets) -> Accuracy:
        return Accuracy.of(predict(model, self.config.clip, clips), targets, self.labels)


class PersonTask:
    def __init__(self, config: Config, settings: TrainSettings):
        if settings.data is not None:
            raise StreamrecError(f"model.arch {config.model.arch} classifies person boxes and trains on procedural "
                                 "group scenes with their boxes; leave out --data")
        if config.clip.fit != "pad":
            raise StreamrecError(f"person models see whole frames letterboxed (clip.fit: pad), not {config.clip.fit}; "
                                 "set clip.fit: pad")
        self.settings, self.config = settings, config
        self.labels = load_labels(config)
        self.train_set, self.val_set, self.test_set = group_splits(self.labels, settings.seed, settings.train_scenes,
                                                                   settings.val_scenes)
        self.data = "procedural groups"
        self.summary = (f"{len(self.train_set)} procedural group scenes, validating on {len(self.val_set)} "
                        f"({self.val_set.duration_s:.0f} s each)")
        self.criterion = nn.BCEWithLogitsLoss()
        self._val: KeyframeSet | None = None

    def loader(self, epoch: int) -> torch.utils.data.DataLoader:
        s = self.settings
        clips = PersonClips(curriculum(self.train_set, epoch, s.epochs), self.config.clip, s.clips_per_epoch, s.seed,
                            epoch)
        return torch.utils.data.DataLoader(clips, batch_size=s.batch_size, num_workers=s.workers, shuffle=False,
                                           collate_fn=collate_person_clips)

    def step(self, model: UInt8Clips, batch: Any) -> tuple[torch.Tensor, int, int]:
        frames, boxes, targets = batch
        logits = forward(model, self.config.clip, frames.numpy(), boxes)
        return self.criterion(logits, targets), len(targets), int((logits.argmax(1) == targets.argmax(1)).sum())

    def validate(self, model: UInt8Clips) -> PersonScore:
        if self._val is None:
            self._val = keyframe_set(self.val_set, self.config.clip)
        return self._score(model, self._val)

    def test(self, model: UInt8Clips) -> PersonScore:
        return self._score(model, keyframe_set(self.test_set, self.config.clip))

    def _score(self, model: UInt8Clips, keyframes: KeyframeSet) -> PersonScore:
        logits = predict_boxes(model, self.config.clip, keyframes.clips, keyframes.boxes)
        return PersonScore.of(logits, keyframes.keys, keyframes.people, self.labels, self.train_set.background)


def portable(path: Path) -> str:
    """Inside the repository, a path relative to it (what configs in ``configs/`` use); else absolute."""
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)
