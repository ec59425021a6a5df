"""The training run: data, model and optimiser set up, the epochs, and what a finished run writes
(``model.pt``, ``config.yaml``, ``TRAINING.md``; ``labels.txt`` for folder data)."""

from __future__ import annotations

import datetime as dt
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml
from torch import nn

from streamrec.checkpoints import save_checkpoint
from streamrec.config import REPO_ROOT, Config, load_labels
from streamrec.models import UInt8Clips, build_model
from streamrec.training import run_state
from streamrec.training.data import folder_splits, procedural_splits
from streamrec.training.dataset import TrainingClips, curriculum, evaluation_clips
from streamrec.training.model import forward, initial_weights, predict
from streamrec.training.records import Accuracy, EpochRecord, TrainResult, TrainSettings
from streamrec.training.report import training_report


class Progress:
    """One line per epoch, redrawn in place on a terminal (every 10% otherwise)."""

    def __init__(self, total: int, title: str, stream=sys.stderr):
        self.total, self.title, self.stream = total, title, stream
        self.start = time.monotonic()
        self.tty = stream.isatty()
        self.last_decile = -1

    def update(self, done: int, loss: float, accuracy: float) -> None:
        decile = 10 * done // self.total
        if not self.tty and decile == self.last_decile and done < self.total:
            return
        self.last_decile = decile
        elapsed = time.monotonic() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else 0.0
        filled = 24 * done // self.total
        line = (f"{self.title} [{'#' * filled}{'.' * (24 - filled)}] {done}/{self.total} "
                f"loss {loss:.3f} acc {accuracy:.3f} {rate:.1f} clips/s eta {eta:.0f}s")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def train(config: Config, settings: TrainSettings, resume: bool = False) -> TrainResult:
    """Train the config's model as ``settings`` say, writing into ``settings.out``; ``resume``
    continues an interrupted run from its last finished epoch."""
    started = time.monotonic()
    clip = config.clip
    if settings.data is None:
        labels = load_labels(config)
        train_set, val_set, test_set = procedural_splits(labels, settings.seed, settings.train_scenes,
                                                         settings.val_scenes)
    else:
        train_set, val_set = folder_splits(Path(settings.data), clip, settings.val_fraction, settings.seed,
                                           config.pipeline.assumed_fps)
        test_set = None
        labels = train_set.labels
        labels_file = settings.out / "labels.txt"
        settings.out.mkdir(parents=True, exist_ok=True)
        labels_file.write_text("\n".join(labels) + "\n")
        config = config.replace(labels=_portable(labels_file))
    config = config.replace(model=replace(config.model, num_classes=len(labels)),
                            checkpoint=_portable(settings.out / "model.pt"))

    torch.manual_seed(settings.seed)
    network = build_model(config)
    if settings.init_checkpoint:
        initial_weights(network, settings.init_checkpoint, arch=config.model.arch, new_head=settings.new_head,
                        labels=labels)
    model = UInt8Clips(network, clip)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(settings.clips_per_epoch / settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr, total_steps=settings.epochs * steps_per_epoch,
                                                   pct_start=0.15)
    history: list[EpochRecord] = []
    first_epoch = 0
    state_path = settings.out / run_state.STATE_FILE
    if resume:
        first_epoch, history = run_state.restore_state(state_path, model, optimizer, schedule, settings)

    print(f"training {config.model.arch} on {len(train_set)} {'procedural scenes' if settings.data is None else 'videos'}"
          f", validating on {len(val_set)}; {len(labels)} classes", file=sys.stderr)
    val_clips, val_targets = evaluation_clips(val_set, clip)
    criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    for epoch in range(first_epoch, settings.epochs):
        epoch_start = time.monotonic()
        torch.manual_seed(settings.seed * 1000 + epoch)  # dropout: a resumed epoch matches an uninterrupted one
        loader = torch.utils.data.DataLoader(
            TrainingClips(curriculum(train_set, epoch, settings.epochs), clip, settings.clips_per_epoch, settings.seed,
                          epoch),
            batch_size=settings.batch_size, num_workers=settings.workers, shuffle=False)
        model.train()
        progress = Progress(settings.clips_per_epoch, f"epoch {epoch + 1}/{settings.epochs}")
        seen = correct = 0
        loss_sum = 0.0
        for frames, targets in loader:
            logits = forward(model, clip, frames.numpy())
            loss = criterion(logits, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            seen += len(targets)
            loss_sum += float(loss.detach()) * len(targets)
            correct += int((logits.argmax(1) == targets).sum())
            progress.update(seen, loss_sum / seen, correct / seen)
        val = Accuracy.of(predict(model, clip, val_clips), val_targets, labels)
        history.append(EpochRecord(epoch + 1, round(loss_sum / seen, 4), round(correct / seen, 4), val.overall,
                                   round(time.monotonic() - epoch_start, 1)))
        print(f"epoch {epoch + 1}: validation accuracy {val.overall:.4f} on {val.count} clips", file=sys.stderr)
        run_state.save_state(state_path, model, optimizer, schedule, epoch + 1, history, settings)

    val = Accuracy.of(predict(model, clip, val_clips), val_targets, labels)
    test = None
    if test_set is not None:
        test_clips, test_targets = evaluation_clips(test_set, clip)
        test = Accuracy.of(predict(model, clip, test_clips), test_targets, labels)
    seconds = time.monotonic() - started + sum(r.seconds for r in history[:first_epoch])
    result = TrainResult(settings.out / "model.pt", history, val, test, round(seconds, 1), labels)
    metadata = {
        "command": settings.command, "seed": settings.seed, "data": settings.data or "procedural",
        "epochs": settings.epochs, "clips_per_epoch": settings.clips_per_epoch, "batch_size": settings.batch_size,
        "train_seconds": result.seconds, "val_accuracy": val.overall, "val_per_class": val.per_class,
        "test_accuracy": test.overall if test else None, "test_per_class": test.per_class if test else None,
        "trained_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": str(torch.__version__), "init_checkpoint": settings.init_checkpoint, "new_head": settings.new_head,
    }
    save_checkpoint(result.checkpoint, network, config, labels, metadata)
    (settings.out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (settings.out / "TRAINING.md").write_text(training_report(result, settings, config))
    state_path.unlink(missing_ok=True)  # it only serves resuming an interrupted run
    return result


def _portable(path: Path) -> str:
    """Inside the repository, a path relative to it (what configs in ``configs/`` use); else absolute."""
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)
