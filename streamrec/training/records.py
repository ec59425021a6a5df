"""What a training run is told (`TrainSettings`) and what it records: accuracy, each epoch, the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


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
    val_scenes: int = 280  # procedural only; the test split has as many
    val_fraction: float = 0.2  # folder only
    workers: int = 1  # one process renders clips while the model trains on one thread
    init_checkpoint: str | None = None
    new_head: bool = False
    command: str = ""


@dataclass(frozen=True)
class Accuracy:
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


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_accuracy: float
    seconds: float


@dataclass
class TrainResult:
    checkpoint: Path
    history: list[EpochRecord]
    val: Accuracy
    test: Accuracy | None
    seconds: float
    labels: list[str] = field(default_factory=list)
