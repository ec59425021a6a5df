"""The state of an unfinished run, saved after every epoch, and resuming from it.

A resumed run must repeat the original command: its settings (all but where it writes, how
many data processes and the command line) are saved with the state and compared.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from streamrec.errors import StreamrecError
from streamrec.training.records import EpochRecord, TrainSettings

STATE_FILE = "train_state.pt"


def save_state(path: Path, model: nn.Module, optimizer, schedule, epoch: int, history: list[EpochRecord],
               settings: TrainSettings) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "history": [vars(r) for r in history],
                "settings": resume_key(settings)}, temporary)
    temporary.replace(path)  # a crash mid-write leaves the previous state intact


def resume_key(settings: TrainSettings) -> dict:
    """What must not change between a run and its resumption."""
    return {k: v for k, v in vars(settings).items() if k not in ("out", "workers", "command")}


def restore_state(path: Path, model: nn.Module, optimizer, schedule,
                  settings: TrainSettings) -> tuple[int, list[EpochRecord]]:
    """Load the saved state into the run's objects; the epochs done and their records."""
    if not path.is_file():
        raise StreamrecError(f"nothing to resume: {path} does not exist (it is removed when a run finishes)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["settings"] != resume_key(settings):
        changed = [k for k, v in resume_key(settings).items() if state["settings"].get(k) != v]
        raise StreamrecError(f"--resume with different settings ({', '.join(changed)}); repeat the original command "
                             "with --resume")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    print(f"resuming after epoch {state['epoch']}", file=sys.stderr)
    return state["epoch"], [EpochRecord(**r) for r in state["history"]]
