"""TRAINING.md: how the weights were made and how well they do, written by the run itself."""

from __future__ import annotations

import torch

from streamrec.config import Config
from streamrec.training.records import TrainResult, TrainSettings


def training_report(result: TrainResult, settings: TrainSettings, config: Config) -> str:
    """The report's Markdown: command, settings, accuracies, per-epoch history, per-class accuracy, confusion."""
    lines = [
        f"# {result.checkpoint.name}: {config.model.arch}, {len(result.labels)} classes",
        "",
        "Written by `run_stream.py train` at the end of the run that produced the weights.",
        "",
        "```",
        settings.command or "(command not recorded)",
        "```",
        "",
        f"- data: {settings.data or 'procedural (streamrec.procedural)'}; seed {settings.seed}",
        f"- {settings.epochs} epochs x {settings.clips_per_epoch} clips, batch {settings.batch_size}, "
        f"AdamW lr {settings.lr} (one-cycle), weight decay {settings.weight_decay}",
        f"- wall time {result.seconds / 60:.1f} min, {torch.get_num_threads()} torch thread(s) and {settings.workers} "
        f"data process(es), torch {torch.__version__}",
        f"- validation accuracy (centred clips of held-out videos): **{result.val.overall:.4f}** on {result.val.count} clips",
    ]
    if result.test:
        lines.append(f"- test accuracy (another held-out seed stream, never seen during training or model selection): "
                     f"**{result.test.overall:.4f}** on {result.test.count} clips")
    lines += ["", "| epoch | train loss | train acc | val acc | seconds |", "|---|---|---|---|---|"]
    lines += [f"| {r.epoch} | {r.train_loss:.4f} | {r.train_accuracy:.4f} | {r.val_accuracy:.4f} | {r.seconds:.0f} |"
              for r in result.history]
    final = result.test or result.val
    lines += ["", f"Per class ({'test' if result.test else 'validation'}):", "",
              "| class | accuracy |", "|---|---|"]
    lines += [f"| {name} | {acc:.4f} |" for name, acc in final.per_class.items()]
    lines += ["", "Confusion (rows true, columns predicted, in class order):", "", "```"]
    lines += [" ".join(f"{n:4d}" for n in row) + f"  {name}" for row, name in zip(final.confusion, result.labels)]
    lines += ["```", ""]
    return "\n".join(lines)
