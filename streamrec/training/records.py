"""What a training run is told (`TrainSettings`) and what it records: accuracy (per clip, or AP and
accuracy per person box), each epoch, the result."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from streamrec.evaluation_persons import BoxDetection, PersonBox, frame_average_precision, mean_ap


@dataclass(frozen=True)
class TrainSettings:
    data: str | None  # a folder of class subfolders, or None for procedural data
    out: Path
    epochs: int = 10
    clips_per_epoch: int = 1500
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    seed: int = 0
    train_scenes: int = 4000  # procedural only
    val_scenes: int | None = None  # procedural only (the test split has as many); None: the model kind's default
    val_fraction: float = 0.2  # folder only
    workers: int = 1  # one process renders clips while the model trains on one thread
    init_checkpoint: str | None = None
    new_head: bool = False
    command: str = ""

    def resolved(self, *, persons: bool) -> "TrainSettings":
        """These settings with the defaults of whole-clip or (``persons``) per-person training filled in."""
        if self.val_scenes is not None:
            return self
        return replace(self, val_scenes=GROUP_VAL_SCENES if persons else VAL_SCENES)


VAL_SCENES = 280  # single-action scenes: 280 validation clips, 40 a class
GROUP_VAL_SCENES = 16  # 20-second group scenes: about 600 keyframes with people on them


@dataclass(frozen=True)
class Accuracy:
    measure: ClassVar[str] = "accuracy"
    counted: ClassVar[str] = "clips"

    overall: float
    per_class: dict[str, float]
    confusion: list[list[int]]  # rows: true class, columns: predicted
    count: int

    @classmethod
    def of(cls, logits: np.ndarray, targets: np.ndarray, labels: list[str]) -> "Accuracy":
        predicted = logits.argmax(axis=1)
        confusion = np.zeros((len(labels), len(labels)), int)
        np.add.at(confusion, (targets, predicted), 1)
        per_class = {name: round(float(confusion[k, k] / confusion[k].sum()), 4)
                     for k, name in enumerate(labels) if confusion[k].sum()}
        return cls(round(float((predicted == targets).mean()), 4), per_class, confusion.tolist(), len(targets))

    def record(self, split: str) -> dict:
        """What a checkpoint's metadata keeps of it, keys prefixed by ``split``."""
        return {f"{split}_accuracy": self.overall, f"{split}_per_class": self.per_class}


@dataclass(frozen=True)
class PersonScore:
    """A person model on held-out keyframes with ground-truth boxes: AVA's frame AP per class
    (`streamrec.evaluation_persons`) and how often each box's top label is its own."""

    measure: ClassVar[str] = "mAP"
    counted: ClassVar[str] = "keyframes"

    overall: float  # mean AP over the action classes; the background class's AP is listed, not averaged
    per_class_ap: dict[str, float]
    boxes: Accuracy  # of the top label per box
    count: int  # keyframes

    @classmethod
    def of(cls, logits: np.ndarray, keys: list, people: list[tuple[PersonBox, ...]], labels: list[str],
           background: str | None) -> "PersonScore":
        """``logits`` ``[N, C]``: a row per person of ``people`` (per keyframe ``keys[i]``), in order."""
        scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))  # the head's sigmoid
        detections, row = {}, 0
        for key, persons in zip(keys, people):
            detections[key] = [BoxDetection(p.box, label, float(scores[row + k, c]))
                               for k, p in enumerate(persons) for c, label in enumerate(labels)]
            row += len(persons)
        per_class = frame_average_precision(dict(zip(keys, people)), detections, labels)
        actions = mean_ap({name: ap for name, ap in per_class.items() if name != background})
        targets = np.array([labels.index(p.label) for persons in people for p in persons])
        return cls(round(actions or 0.0, 4), {name: round(ap, 4) for name, ap in per_class.items()},
                   Accuracy.of(logits, targets, labels), len(keys))

    def record(self, split: str) -> dict:
        """What a checkpoint's metadata keeps of it, keys prefixed by ``split``."""
        return {f"{split}_map": self.overall, f"{split}_ap_per_class": self.per_class_ap,
                f"{split}_box_accuracy": self.boxes.overall, f"{split}_box_per_class": self.boxes.per_class,
                f"{split}_keyframes": self.count, f"{split}_boxes": self.boxes.count}


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float  # of clips, or of person boxes' top labels
    val_score: float  # the held-out figure runs are judged by: clip accuracy, or frame mAP for person models
    seconds: float


@dataclass
class TrainResult:
    checkpoint: Path
    history: list[EpochRecord]
    val: Accuracy | PersonScore
    test: Accuracy | PersonScore | None
    seconds: float
    labels: list[str] = field(default_factory=list)
