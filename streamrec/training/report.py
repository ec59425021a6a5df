"""TRAINING.md: how the weights were made and how well they do, written by the run itself."""

from __future__ import annotations

import torch

from streamrec.config import Config
from streamrec.training.records import Accuracy, PersonScore, TrainResult, TrainSettings

DATA_NAMES = {"procedural": "procedural (streamrec.procedural)",
              "procedural groups": "procedural group scenes (streamrec.procedural_group)"}


def training_report(result: TrainResult, settings: TrainSettings, config: Config, data: str) -> str:
    """The report's Markdown: command, settings, held-out figures, per-epoch history, per-class figures, confusion."""
    lines = [
        f"# {result.checkpoint.name}: {config.model.arch}, {len(result.labels)} classes",
        "",
        "Written by `run_stream.py train` at the end of the run that produced the weights.",
        "",
        "```",
        settings.command or "(command not recorded)",
        "```",
        "",
        f"- data: {DATA_NAMES.get(data, data)}; seed {settings.seed}",
        f"- {settings.epochs} epochs x {settings.clips_per_epoch} clips, batch {settings.batch_size}, "
        f"AdamW lr {settings.lr} (one-cycle), weight decay {settings.weight_decay}",
        f"- wall time {result.seconds / 60:.1f} min, {torch.get_num_threads()} torch thread(s) and {settings.workers} "
        f"data process(es), torch {torch.__version__}",
    ]
    if isinstance(result.val, PersonScore):
        lines += _person_lines(result)
    else:
        lines += _clip_lines(result)
    final = result.test or result.val
    boxes = isinstance(final, PersonScore)
    confusion = final.boxes.confusion if boxes else final.confusion
    lines += ["", f"Confusion{' of the top label per box' if boxes else ''} (rows true, columns predicted, in class "
              "order):", "", "```"]
    lines += [" ".join(f"{n:4d}" for n in row) + f"  {name}" for row, name in zip(confusion, result.labels)]
    lines += ["```", ""]
    return "\n".join(lines)


def _clip_lines(result: TrainResult) -> list[str]:
    lines = [f"- validation accuracy (centred clips of held-out videos): **{result.val.overall:.4f}** on "
             f"{result.val.count} clips"]
    if result.test:
        lines.append(f"- test accuracy (another held-out seed stream, never seen during training or model selection): "
                     f"**{result.test.overall:.4f}** on {result.test.count} clips")
    lines += _history(result, "val acc")
    final: Accuracy = result.test or result.val  # type: ignore[assignment]
    lines += ["", f"Per class ({'test' if result.test else 'validation'}):", "", "| class | accuracy |", "|---|---|"]
    lines += [f"| {name} | {acc:.4f} |" for name, acc in final.per_class.items()]
    return lines


def _person_lines(result: TrainResult) -> list[str]:
    val: PersonScore = result.val  # type: ignore[assignment]
    test: PersonScore | None = result.test  # type: ignore[assignment]
    lines = ["- held-out figures with ground-truth boxes on the keyframes the frame AP scores (2 a second, each "
             "clip's middle Fast frame): mAP is AVA's frame AP at IoU 0.5 averaged over the action classes (the "
             "background class's AP is listed, not averaged); box accuracy is the share of boxes whose top label "
             "is theirs",
             f"- validation: mAP **{val.overall:.4f}**, box accuracy {val.boxes.overall:.4f} on {val.count} keyframes "
             f"({val.boxes.count} boxes)"]
    if test:
        lines.append(f"- test (another held-out seed stream, never seen during training or model selection): mAP "
                     f"**{test.overall:.4f}**, box accuracy {test.boxes.overall:.4f} on {test.count} keyframes "
                     f"({test.boxes.count} boxes)")
    lines += _history(result, "val mAP")
    final = test or val
    lines += ["", f"Per class ({'test' if test else 'validation'}):", "", "| class | AP | top-label accuracy | boxes |",
              "|---|---|---|---|"]
    for k, name in enumerate(result.labels):
        ap = final.per_class_ap.get(name)
        accuracy = final.boxes.per_class.get(name)
        lines.append(f"| {name} | {'-' if ap is None else f'{ap:.4f}'} | "
                     f"{'-' if accuracy is None else f'{accuracy:.4f}'} | {sum(final.boxes.confusion[k])} |")
    return lines


def _history(result: TrainResult, score: str) -> list[str]:
    lines = ["", f"| epoch | train loss | train acc | {score} | seconds |", "|---|---|---|---|---|"]
    return lines + [f"| {r.epoch} | {r.train_loss:.4f} | {r.train_accuracy:.4f} | {r.val_score:.4f} | {r.seconds:.0f} |"
                    for r in result.history]
