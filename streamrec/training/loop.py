"""The training run: data, model and optimiser set up, the epochs, and what a finished run writes
(``model.pt``, ``config.yaml``, ``TRAINING.md``; ``labels.txt`` for folder data)."""

from __future__ import annotations

import datetime as dt
import math
import sys
import time
from dataclasses import replace

import torch

from streamrec.checkpoints import save_checkpoint
from streamrec.config import Config, write_config
from streamrec.models import UInt8Clips, build_model
from streamrec.redaction import redact
from streamrec.training import run_state
from streamrec.training.model import initial_weights
from streamrec.training.records import EpochRecord, TrainResult, TrainSettings
from streamrec.training.report import training_report
from streamrec.training.tasks import portable, task_for


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
    continues an interrupted run from its last finished epoch. Whole-clip and person models
    differ in data, loss and score (`streamrec.training.tasks`); everything else is this loop."""
    started = time.monotonic()
    task, settings = task_for(config, settings)
    labels = task.labels
    config = task.config.replace(model=replace(task.config.model, num_classes=len(labels)),
                                 checkpoint=portable(settings.out / "model.pt"))

    torch.manual_seed(settings.seed)
    network = build_model(config)
    if settings.init_checkpoint:
        initial_weights(network, settings.init_checkpoint, arch=config.model.arch, new_head=settings.new_head,
                        labels=labels)
    model = UInt8Clips(network, config.clip)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(settings.clips_per_epoch / settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr, total_steps=settings.epochs * steps_per_epoch,
                                                   pct_start=0.15)
    history: list[EpochRecord] = []
    first_epoch = 0
    state_path = settings.out / run_state.STATE_FILE
    if resume:
        first_epoch, history = run_state.restore_state(state_path, model, optimizer, schedule, settings)

    print(f"training {config.model.arch} on {task.summary}; {len(labels)} classes", file=sys.stderr)
    for epoch in range(first_epoch, settings.epochs):
        epoch_start = time.monotonic()
        torch.manual_seed(settings.seed * 1000 + epoch)  # dropout: a resumed epoch matches an uninterrupted one
        model.train()
        progress = Progress(settings.clips_per_epoch, f"epoch {epoch + 1}/{settings.epochs}")
        clips = seen = correct = 0
        loss_sum = 0.0
        for batch in task.loader(epoch):
            loss, count, hits = task.step(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            clips += len(batch[0])
            seen += count
            loss_sum += float(loss.detach()) * count
            correct += hits
            progress.update(clips, loss_sum / seen, correct / seen)
        val = task.validate(model)
        history.append(EpochRecord(epoch + 1, round(loss_sum / seen, 4), round(correct / seen, 4), val.overall,
                                   round(time.monotonic() - epoch_start, 1)))
        print(f"epoch {epoch + 1}: validation {val.measure} {val.overall:.4f} on {val.count} {val.counted}",
              file=sys.stderr)
        run_state.save_state(state_path, model, optimizer, schedule, epoch + 1, history, settings)

    val = task.validate(model)
    test = task.test(model)
    seconds = time.monotonic() - started + sum(r.seconds for r in history[:first_epoch])
    result = TrainResult(settings.out / "model.pt", history, val, test, round(seconds, 1), labels)
    metadata = {
        "command": settings.command, "seed": settings.seed, "data": task.data,
        "epochs": settings.epochs, "clips_per_epoch": settings.clips_per_epoch, "batch_size": settings.batch_size,
        "train_seconds": result.seconds, **val.record("val"),
        **(test.record("test") if test else {key.replace("val", "test", 1): None for key in val.record("val")}),
        "trained_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": str(torch.__version__), "init_checkpoint": settings.init_checkpoint, "new_head": settings.new_head,
    }
    save_checkpoint(result.checkpoint, network, config, labels, metadata)
    write_config(settings.out / "config.yaml", config)
    (settings.out / "TRAINING.md").write_text(redact(training_report(result, settings, config, task.data)))
    state_path.unlink(missing_ok=True)  # it only serves resuming an interrupted run
    return result
