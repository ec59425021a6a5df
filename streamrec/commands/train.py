"""``run_stream.py train``: train a configured model on procedural clips or on a folder of your clips.

    run_stream.py train                                  # the tiny SlowFast on procedural data
    run_stream.py train --data data/ --out runs/mine     # data/<class>/*.mp4, one folder per class
    run_stream.py train --config slowfast_r50_8x8 --checkpoint kinetics.pt --new-head --data data/
    run_stream.py train --config slowfast_tiny_roi       # a person model (RoI head) on procedural group scenes
    run_stream.py train --stream-from slowfast_tiny --data videos/ --out runs/causal   # no labels
    run_stream.py train --person-detector --out runs/detector   # the procedural rooms' person detector

A config whose network classifies person boxes trains on procedural rooms with several people
and the ground-truth boxes of each clip's keyframe, and is judged by frame mAP.

The output folder gets ``model.pt`` (weights with their config and label names),
``config.yaml`` (run it with ``run_stream.py --config OUT/config.yaml``), ``labels.txt`` for
folder data, and ``TRAINING.md`` (the command, seed, timings and held-out figures of the run).

``--stream-from CONFIG|CHECKPOINT`` distils the clip model's streaming form (``--form``) from the
clip model itself on unlabelled footage (``--data``: a folder of videos, any layout, or the
procedural generator) and writes ``model.pt``, ``config.yaml`` (the clip model's config in the
streaming form) and ``distill.json``; see
`streamrec.training.distill` and docs/streaming.md.

``--person-detector`` trains the tiny person detector of the procedural rooms
(`streamrec.training.detector`) on frames fitted to a config's clip input, as per-person mode
hands them to the detector (``--config``, default the per-person demo's), and writes
``model.onnx`` (run it with ``detection.detector: onnx:OUT/model.onnx``) and ``detector.json``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from streamrec.commands.flags import float_up_to, fraction, int_from
from streamrec.config import DEFAULT_CONFIG, RANGES, load_config
from streamrec.errors import StreamrecError, check_output_path


DISTILL_LR = 3e-4
DISTILL_DEFAULTS = {"form": "causal", "steps": 500, "units": 10, "target_hops": 1, "targets": "teacher",
                    "average_units": None, "device": "cpu"}  # unset in argparse: typed only with --stream-from
# Options of clip training that distillation does not read: refused with --stream-from, not ignored.
NOT_WITH_STREAM_FROM = ("config", "epochs", "clips_per_epoch", "train_scenes", "val_scenes", "val_fraction", "workers",
                        "new_head", "resume", "set")
NOT_WITHOUT_STREAM_FROM = ("form", "steps", "units", "target_hops", "targets", "average_units", "device")
DETECTOR_DEFAULTS = {"steps": 3000, "batch_size": 32, "lr": 3e-3}
# Flags' upper ends: past them a value is a typo, and would fail minutes in (an overflow in the
# optimizer or the seeding, threads or memory the machine does not have), not at the command line.
MAX_SEED = 2**32 - 1  # numpy's seeds
MAX_THREADS = int(RANGES["engine.threads"][1])
MAX_WORKERS = 256
MAX_BATCH = 4096
MAX_UNITS = 1024  # a training sequence's, and a target's or the head's average's, units
MAX_COUNT = 10**9  # steps, epochs, clips, scenes
MAX_LR = 10.0
# What the person detector's training reads; every other option is refused with --person-detector.
WITH_PERSON_DETECTOR = ("person_detector", "config", "out", "steps", "batch_size", "lr", "seed", "threads", "workers")


def configure(parser: argparse.ArgumentParser) -> None:
    from streamrec.training.records import GROUP_VAL_SCENES, VAL_SCENES

    defaults = _settings_defaults()
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="model config to train (default %(default)s)")
    parser.add_argument("--data", help="folder with one subfolder of videos per class (default: procedural clips)")
    parser.add_argument("--out", type=Path, help="output folder (default runs/<config name>)")
    parser.add_argument("--epochs", type=int_from(1, MAX_COUNT), default=defaults.epochs)
    parser.add_argument("--clips-per-epoch", type=int_from(1, MAX_COUNT), default=defaults.clips_per_epoch)
    parser.add_argument("--batch-size", type=int_from(1, MAX_BATCH), default=defaults.batch_size)
    parser.add_argument("--lr", type=float_up_to(MAX_LR), help=f"peak learning rate of the one-cycle schedule (default {defaults.lr}; "
                                                 f"with --stream-from, AdamW's rate, default {DISTILL_LR})")
    parser.add_argument("--seed", type=int_from(0, MAX_SEED), default=defaults.seed, help="fixes data, split, augmentation and init")
    parser.add_argument("--train-scenes", type=int_from(1, MAX_COUNT), default=defaults.train_scenes, help="procedural training scenes")
    parser.add_argument("--val-scenes", type=int_from(1, MAX_COUNT), default=defaults.val_scenes,
                        help="procedural validation scenes (and as many test scenes); default "
                             f"{VAL_SCENES}, or {GROUP_VAL_SCENES} group scenes for a person model")
    parser.add_argument("--val-fraction", type=fraction, default=defaults.val_fraction,
                        help="share of each class folder's videos held out for validation")
    parser.add_argument("--workers", type=int_from(0, MAX_WORKERS), default=defaults.workers,
                        help="data loading processes (0: in the training process)")
    parser.add_argument("--threads", type=int_from(1, MAX_THREADS), default=1,
                        help="torch CPU threads (default 1: on a shared CPU, threads that spin-wait for each other "
                             "lose more than they gain; the data loader takes another core)")
    parser.add_argument("--checkpoint", help="start from these weights (a streamrec checkpoint) to fine-tune; with "
                        "--stream-from CONFIG, the clip model's weights (any format that config loads)")
    parser.add_argument("--new-head", action="store_true",
                        help="with --checkpoint: replace the classifier, for a different set of classes")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. model.dropout=0.2; repeatable")
    streaming = parser.add_argument_group("distilling a streaming model (no labels)")
    streaming.add_argument("--stream-from", metavar="CONFIG|CHECKPOINT",
                           help="the clip model (a config with its checkpoint or --checkpoint's, or a streamrec "
                                "checkpoint) whose streaming form to distil from it on --data (default: procedural "
                                "footage)")
    streaming.add_argument("--form", choices=("causal", "delayed_exact"),
                           help=f"the streaming form to distil (default {DISTILL_DEFAULTS['form']})")
    streaming.add_argument("--steps", type=int_from(1, MAX_COUNT), help=f"optimizer steps (default {DISTILL_DEFAULTS['steps']})")
    streaming.add_argument("--units", type=int_from(1, MAX_UNITS),
                           help=f"units (Slow frames) per training sequence (default {DISTILL_DEFAULTS['units']})")
    streaming.add_argument("--average-units", type=int_from(1, MAX_UNITS),
                           help="causal form: the head averages the last N units of per-step features instead of a "
                                "clip's (answers sooner); run the result with streaming.average_units N")
    streaming.add_argument("--device", help="where the teacher and the student run: cpu (default), cuda, cuda:N or "
                                            "auto (a GPU makes a 224 px model's distillation practical)")
    streaming.add_argument("--targets", choices=("teacher", "labels"),
                           help="teacher: the clip model's predictions, no labels (default); labels: the procedural "
                                "generator's labels instead, to compare what labelling would buy")
    streaming.add_argument("--target-hops", type=int_from(1, MAX_UNITS),
                           help="teacher windows averaged into each target, the newest and those before it "
                                f"(default {DISTILL_DEFAULTS['target_hops']}: the pipeline smooths the student's "
                                "output as it smooths the clip model's, so a trailing average here counts that "
                                "lag twice)")
    detector = parser.add_argument_group("training the procedural rooms' person detector")
    detector.add_argument("--person-detector", action="store_true",
                          help="train the tiny person detector on procedural rooms (with --steps, --batch-size, "
                               f"--lr, default {DETECTOR_DEFAULTS['steps']}, {DETECTOR_DEFAULTS['batch_size']}, "
                               f"{DETECTOR_DEFAULTS['lr']}) on frames fitted to --config's clip input (default "
                               "the per-person demo's) and export it to OUT/model.onnx")


def _settings_defaults():
    from streamrec.training.records import TrainSettings

    return TrainSettings(data=None, out=Path("."))


def main(args: argparse.Namespace) -> int:
    import torch

    from streamrec.training import TrainSettings, train

    if args.person_detector:
        return detector_command(args)
    if args.stream_from:
        return distill_command(args)
    streaming = _set_apart_from_default(args, NOT_WITHOUT_STREAM_FROM)
    if streaming:
        raise StreamrecError(f"{', '.join(streaming)} set how a streaming model is distilled; add --stream-from "
                             "CONFIG|CHECKPOINT")
    if args.new_head and not args.checkpoint:
        raise StreamrecError("--new-head replaces the classifier of --checkpoint; pass --checkpoint too")
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.set)
    settings = TrainSettings(
        data=args.data, out=check_output_path(args.out or Path("runs") / config.name, "--out", folder=True),
        epochs=args.epochs,
        clips_per_epoch=args.clips_per_epoch, batch_size=args.batch_size, lr=_settings_defaults().lr if args.lr is None else args.lr, seed=args.seed,
        train_scenes=args.train_scenes, val_scenes=args.val_scenes, val_fraction=args.val_fraction,
        workers=args.workers, init_checkpoint=args.checkpoint, new_head=args.new_head, command=recorded_command(),
    )
    result = train(config, settings, resume=args.resume)
    measure = result.val.measure
    test = f", test {measure} {result.test.overall:.4f}" if result.test else ""
    print(f"wrote {result.checkpoint} in {result.seconds / 60:.1f} min: validation {measure} "
          f"{result.val.overall:.4f}{test}", file=sys.stderr)
    return 0


def distill_command(args: argparse.Namespace) -> int:
    """``train --stream-from``: `streamrec.training.distill` on the command line's values."""
    import torch

    from streamrec.training.distill import distill, stream_from

    refused = _set_apart_from_default(args, NOT_WITH_STREAM_FROM)
    if refused:
        raise StreamrecError(f"{', '.join(refused)} {'does' if len(refused) == 1 else 'do'} not apply to "
                             "--stream-from (the clip model it names is the teacher and the start); drop "
                             f"{'it' if len(refused) == 1 else 'them'}")
    lr = DISTILL_LR if args.lr is None else args.lr
    form, steps, units, target_hops, targets, device = (
        DISTILL_DEFAULTS[name] if getattr(args, name) is None else getattr(args, name)
        for name in ("form", "steps", "units", "target_hops", "targets", "device"))
    torch.set_num_threads(args.threads)
    config = stream_from(args.stream_from, args.checkpoint)
    out = args.out or Path("runs") / f"{config.name}_{form}{'_labels' if targets == 'labels' else ''}"
    check_output_path(out, "--out", folder=True)
    record = distill(config, args.data or "procedural", out, steps=steps, batch=args.batch_size, units=units, lr=lr,
                     seed=args.seed, form=form, target_hops=target_hops, targets=targets,
                     average_units=args.average_units, device=device)
    held = record["held_out"]
    print(f"wrote {out / 'model.pt'} in {record['seconds'] / 60:.1f} min: on {held['sequences']} held-out "
          f"sequences, KL to the clip model {held['before']['kl']} -> {held['after']['kl']}, top-1 agreement "
          f"{held['before']['agreement']} -> {held['after']['agreement']}; run it with `run_stream.py --config "
          f"{out / 'config.yaml'}`", file=sys.stderr)
    return 0


def detector_command(args: argparse.Namespace) -> int:
    """``train --person-detector``: `streamrec.training.detector` on the command line's values."""
    import torch

    from streamrec.training.detector import train_detector

    parser = argparse.ArgumentParser()
    configure(parser)
    options = vars(parser.parse_args([]))
    refused = _set_apart_from_default(args, tuple(name for name in options if name not in WITH_PERSON_DETECTOR))
    if refused:
        raise StreamrecError(f"{', '.join(refused)} {'does' if len(refused) == 1 else 'do'} not apply to "
                             "--person-detector (it trains on procedural rooms with its own network); drop "
                             f"{'it' if len(refused) == 1 else 'them'}")
    steps = DETECTOR_DEFAULTS["steps"] if args.steps is None else args.steps
    batch = args.batch_size if _set_apart_from_default(args, ("batch_size",)) else DETECTOR_DEFAULTS["batch_size"]
    lr = DETECTOR_DEFAULTS["lr"] if args.lr is None else args.lr
    torch.set_num_threads(args.threads)
    out = check_output_path(args.out or Path("runs") / "person_detector", "--out", folder=True)
    # Frames as per-person mode hands them to the detector: the config's clip input (the demo's by default).
    from streamrec.commands.run import PERSONS_CONFIG

    config = load_config(args.config if _set_apart_from_default(args, ("config",)) else PERSONS_CONFIG)
    record = train_detector(out, steps=steps, batch=batch, lr=lr, seed=args.seed, workers=args.workers,
                            clip=config.clip, command=recorded_command(),
                            log=lambda line: print(line, file=sys.stderr))
    held = record["held_out"]
    print(f"wrote {out / 'model.onnx'} in {record['seconds'] / 60:.1f} min: on {held['frames']} held-out frames, "
          f"AP50 {held['ap50']}, recall {held['recall']}, precision {held['precision']}", file=sys.stderr)
    return 0


def _set_apart_from_default(args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    """The flags among ``names`` (argparse dests) whose value is not their default, as typed (``--epochs``)."""
    parser = argparse.ArgumentParser()
    configure(parser)
    return [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) != parser.get_default(name)]


def recorded_command() -> str:
    """The command line as typed, for the records a run writes (TRAINING.md, eval JSON)."""
    return "python run_stream.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
