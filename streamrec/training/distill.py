"""A causal streaming model distilled from its clip model on unlabelled video (issue 21).

The student is the clip model's causal streaming form (`streamrec.models.streaming`, form
``causal``: every temporal kernel moved to the past side, so nothing waits for future frames),
started from the clip model's own weights; the teacher is the clip model. A training sequence is
``units`` units of one stream's frames on the streaming grid. At the end of every unit from the
first whole clip on, the student's logits (all of them in one call: `sequence_logits`) are pulled
towards the teacher's probabilities on the clip-length window they describe (for the causal form
the one that ends there; ``--form delayed_exact`` fits that form to windows whose edges see real
frames, ``delay_units`` earlier), by KL divergence. A target is the teacher's own window
(``--target-hops 1``), not the pipeline's smoothed output: the pipeline smooths the student as it
smooths the teacher, so a trailing average in the targets would be a lag learned and then paid
again. No label is read. Batch norms keep the clip model's statistics
(the network stays in eval mode; its parameters all train).

Footage: a folder of videos (every file OpenCV opens; frames taken by time at the training rate
and fitted as the capture fits them), or ``procedural``, the surveillance generator::

    python run_stream.py train --stream-from slowfast_tiny --out runs/causal_tiny      # procedural footage
    python run_stream.py train --stream-from slowfast_tiny --data videos/ --out runs/mine

``--average-units N`` distils a causal form whose head averages only the last N units of per-step
features (the newest frames then weigh more, and it answers sooner); the checkpoint records it,
and runs only with ``streaming.average_units: N``.

For comparison, ``--targets labels`` trains the same form from the same start on the procedural
generator's labels instead (windows labelled as clip training labels them): what labelling the
footage would have bought.

The result is a streamrec checkpoint of the network (its metadata says ``streaming.form:
causal``) that records the teacher's config in that form (`config_that_runs`), and that config
as ``config.yaml`` beside it, as clip training writes one: ``run --config runs/mine/config.yaml``
(or ``run --checkpoint runs/mine/model.pt``) runs it as it is. ``distill.json`` records the
losses, and before/after figures on held-out sequences (KL to the teacher and top-1 agreement
with it).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from streamrec.config import (ClipConfig, Config, StreamingConfig, load_config, load_labels, streaming_hop_frames,
                              without_deployment, write_config)
from streamrec.errors import StreamrecError
from streamrec.redaction import redact_data
from streamrec.sampling import latest_at_or_before
from streamrec.sources import VIDEO_SUFFIXES

log = logging.getLogger(__name__)
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".pyth", ".pkl")  # what --stream-from reads as weights, not a config



class Footage(Protocol):
    def sequence(self, rng: np.random.Generator, frames: int) -> np.ndarray:
        """``frames`` consecutive frames at the training rate, fitted: uint8 [frames, size, size, 3]."""
        ...


@dataclass
class ProceduralFootage:
    """Surveillance scenes of the procedural generator, a new one for every sequence."""

    clip: ClipConfig
    scene_seconds: float = 40.0

    def sequence(self, rng: np.random.Generator, frames: int) -> np.ndarray:
        return self.labelled_sequence(rng, frames)[0]

    def labelled_sequence(self, rng: np.random.Generator, frames: int) -> tuple[np.ndarray, float, list]:
        """`sequence`, with the second of the scene it starts at and the scene's labelled segments
        (what ``--targets labels`` trains on; the same draws, so the same frames)."""
        from streamrec.procedural import surveillance_scene
        from streamrec.transforms import scene_frames

        scene = surveillance_scene(int(rng.integers(2**31)), self.scene_seconds)
        span = frames / self.clip.train_fps
        start = rng.uniform(0.0, max(0.0, scene.duration - span))
        return scene_frames(scene, self.clip, start + np.arange(frames) / self.clip.train_fps), float(start), \
            scene.segments


@dataclass
class Recording:
    """One video of a folder: ``frames`` starts at what its header counts and shrinks to what decodes."""

    path: Path
    fps: float
    header_frames: int
    frames: int


class FolderFootage:
    """The videos of a folder (searched recursively), a random stretch of one for every sequence,
    drawn from all of their seconds alike.

    A week of camera recordings holds damaged files: a recording cut off mid-write keeps a header
    that counts frames it never got. Where decoding stops short of a drawn stretch, the file is
    kept to the frames before that point (said once, in a warning) and the stretch drawn again;
    a file that decodes no frame is left out. Training stops only when no file is left.
    """

    def __init__(self, root: Path, clip: ClipConfig):
        import cv2

        self.clip = clip
        if not root.is_dir():
            raise StreamrecError(f"--data {root} is not a folder; give a folder of videos or 'procedural'")
        self.root = root
        self.videos: list[Recording] = []
        unreadable = []
        for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES):
            capture = cv2.VideoCapture(str(path))
            fps, count = capture.get(cv2.CAP_PROP_FPS), int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            capture.release()
            if fps > 0 and count > 0:
                self.videos.append(Recording(path, fps, count, count))
            else:
                unreadable.append(path.name)
        if not self.videos:
            raise StreamrecError(f"no readable video ({', '.join(VIDEO_SUFFIXES)}) in {root}")
        if unreadable:
            shown = ", ".join(unreadable[:5]) + (f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else "")
            log.warning("left out %d file(s) of %s that OpenCV cannot open or that give no frame rate or length: %s",
                        len(unreadable), root, shown)

    def sequence(self, rng: np.random.Generator, frames: int) -> np.ndarray:
        while self.videos:
            # every second of footage equally likely: a file drawn by its length, not one in N
            seconds = np.array([video.frames / video.fps for video in self.videos])
            video = self.videos[int(rng.choice(len(self.videos), p=seconds / seconds.sum()))]
            stretch = self._stretch(video, rng, frames)
            if stretch is not None:
                return stretch
        raise StreamrecError(f"no video in {self.root} decodes a frame; check the files play "
                             "(OpenCV/FFmpeg must read them)")

    def _stretch(self, video: Recording, rng: np.random.Generator, frames: int) -> np.ndarray | None:
        """``frames`` frames from a random start in ``video``; None where decoding stopped short
        of them (the video is then cut to the frames before, or left out if none decode)."""
        import cv2

        from streamrec.transforms import fit_clip_frame

        times = np.arange(video.frames) / video.fps
        span = frames / self.clip.train_fps
        start = rng.uniform(0.0, max(0.0, times[-1] - span))
        indices = latest_at_or_before(times, start + np.arange(frames) / self.clip.train_fps)
        capture = cv2.VideoCapture(str(video.path))
        capture.set(cv2.CAP_PROP_POS_FRAMES, int(indices[0]))
        decoded, position, frame = {}, int(indices[0]), None
        try:
            for wanted in np.unique(indices):
                while position <= wanted:
                    ok, image = capture.read()
                    if not ok:  # OpenCV's FFmpeg reader skips a broken packet itself: this is where decoding ends
                        self._cut(video, position)
                        return None
                    frame = image
                    position += 1
                decoded[wanted] = fit_clip_frame(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), self.clip)
        finally:
            capture.release()
        return np.stack([decoded[i] for i in indices])

    def _cut(self, video: Recording, decodable: int) -> None:
        if decodable == 0:
            self.videos.remove(video)
            log.warning("%s decodes no frame; left out of training", video.path)
            return
        if video.frames == video.header_frames:  # said once a file: a later draw may find it stops sooner still
            log.warning("%s stops decoding by frame %d (its header says %d); training uses the frames before that",
                        video.path, decodable, video.header_frames)
        video.frames = decodable


def footage(data: str, clip: ClipConfig) -> Footage:
    return ProceduralFootage(clip) if data == "procedural" else FolderFootage(Path(data), clip)


# --------------------------------------------------------------------------- teacher and student


def stream_inputs(fast: "torch.Tensor", alpha: int | None) -> list["torch.Tensor"]:
    """The pathways of a stream's Fast frames: Slow is every ``alpha``-th, the first of each unit."""
    return [fast[:, ::alpha], fast] if alpha else [fast]


def teacher_targets(teacher, clip: ClipConfig, fast: "torch.Tensor", clip_units: int, rate: int,
                    target_hops: int) -> "torch.Tensor":
    """The teacher's probabilities ``[B, windows, K]`` on every clip-length window of ``fast``
    (uint8 ``[B, units * rate, H, W, 3]``) that ends on a unit boundary, each averaged with the
    ``target_hops - 1`` windows before it (fewer at the start)."""
    import torch

    units = fast.shape[1] // rate
    windows = torch.stack([fast[:, (u - clip_units) * rate:u * rate] for u in range(clip_units, units + 1)], dim=1)
    flat = windows.flatten(0, 1)  # B * windows, T, H, W, 3
    with torch.no_grad():
        probabilities = teacher(*stream_inputs(flat, clip.alpha)).softmax(-1).view(*windows.shape[:2], -1)
    return torch.stack([probabilities[:, max(0, w - target_hops + 1):w + 1].mean(1)
                        for w in range(probabilities.shape[1])], dim=1)


def label_targets(segments: list, start_s: float, ends: int, unit_s: float, clip_units: int, labels: list[str],
                  background: str | None) -> "torch.Tensor":
    """One-hot targets ``[ends, K]`` from the generator's labels for the clip-length windows that end
    ``clip_units``, ``clip_units + 1``, ... units into a sequence starting at ``start_s``, labelled
    as clip training labels its windows (`window_label`); an ambiguous window's row is all zero."""
    import torch

    from streamrec.training.windows import window_label

    targets = torch.zeros(ends, len(labels))
    for w in range(ends):
        end = start_s + (clip_units + w) * unit_s
        label = window_label(segments, end - clip_units * unit_s, end, background)
        if label is not None:
            targets[w, labels.index(label)] = 1.0
    return targets


def kl_to(targets: "torch.Tensor", logits: "torch.Tensor") -> "torch.Tensor":
    """Mean KL(targets || softmax(logits)) over every window of every sequence that has a target
    (a one-hot target makes it the cross-entropy; an all-zero row is a window left out)."""
    log_p = logits.log_softmax(-1)
    per_window = (targets * (targets.clamp_min(1e-8).log() - log_p)).sum(-1)
    has_target = targets.sum(-1) > 0
    return per_window[has_target].mean() if bool(has_target.any()) else per_window.sum() * 0.0


@dataclass
class Held:
    """Held-out sequences: the student's KL to the teacher and its top-1 agreement with it."""

    kl: float
    agreement: float


def evaluate(student, targets: list["torch.Tensor"], sequences: list["torch.Tensor"], alpha: int | None) -> Held:
    import torch

    kls, agree = [], []
    with torch.no_grad():
        for fast, target in zip(sequences, targets):
            logits = student.sequence_logits(*stream_inputs(fast, alpha))
            kls.append(float(kl_to(target, logits)))
            agree.append((logits.argmax(-1) == target.argmax(-1)).float().mean().item())
    return Held(round(float(np.mean(kls)), 4), round(float(np.mean(agree)), 4))


def distill(config: Config, data: str, out: Path, *, steps: int, batch: int, units: int, lr: float, seed: int,
            form: str = "causal", target_hops: int = 1, targets: str = "teacher", average_units: int | None = None,
            held_out: int = 8, log_every: int = 10, device: str = "cpu") -> dict:
    """Distil a streaming form (``causal``, or ``delayed_exact`` to fit its head to windows that see
    real frames at their edges) of ``config``'s model; returns what ``distill.json`` records.

    ``targets="labels"`` trains the same form from the same start on the procedural generator's
    labels instead of the clip model's predictions: the comparison that says what distilling
    without labels gives up. Held-out figures are against the clip model either way."""
    import torch

    from streamrec.backends.torch_backend import pick_device
    from streamrec.checkpoints import load_model
    from streamrec.models.streaming import streaming_network

    if targets not in ("teacher", "labels"):
        raise StreamrecError(f"targets {targets!r}: use teacher (no labels) or labels")
    if targets == "labels" and data != "procedural":
        raise StreamrecError("--targets labels reads the procedural generator's labels; a folder of videos has "
                             "none: drop --data, or drop --targets to distil from the clip model")
    refuse_a_streaming_teacher(config)
    on = pick_device(device, "--device ")
    clip = config.clip
    source = footage(data, clip)  # a folder without videos is refused before any model is loaded
    clip_model = config.replace(streaming=None)  # the teacher, and the weights the student starts from
    teacher = load_model(clip_model).eval().to(on)
    student_model = copy.deepcopy(teacher)  # its own copy of the weights: the teacher stays as it is
    student = streaming_network(student_model, clip, form=form, units=units, average_units=average_units)
    if units < student.warmup_units + 1:
        raise StreamrecError(f"--units {units} leaves no room to learn from: use at least "
                             f"{student.warmup_units + 1} (a clip is {student.clip_units} units)")
    fast_per_unit = max(student.rates)
    frames = units * student.unit_frames
    windows = units - student.warmup_units + 1  # the student's logits describe the first windows of the sequence
    labels = load_labels(config)
    background = config.postprocess.background_labels[0] if config.postprocess.background_labels else None

    def draw(rng: np.random.Generator, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``count`` sequences' Fast frames, and with ``targets="labels"`` their label targets."""
        fast, truth = [], []
        for _ in range(count):
            if targets == "labels":
                sequence, start, segments = source.labelled_sequence(rng, frames)
                truth.append(label_targets(segments, start, windows, student.unit_frames / clip.train_fps,
                                           student.clip_units, labels, background))
            else:
                sequence = source.sequence(rng, frames)
            fast.append(sequence[::clip.sampling_rate])
        return torch.from_numpy(np.stack(fast)).to(on), torch.stack(truth).to(on) if truth else None

    def teacher_of(fast: torch.Tensor) -> torch.Tensor:
        return teacher_targets(teacher, clip, fast, student.clip_units, fast_per_unit, target_hops)[:, :windows]

    held_rng = np.random.default_rng([seed, 1])
    held = [draw(held_rng, 1)[0] for _ in range(held_out)]
    held_targets = [teacher_of(fast) for fast in held]
    before = evaluate(student, held_targets, held, clip.alpha)
    log.info("held-out before: KL %.4f, top-1 agreement with the teacher %.3f", before.kl, before.agreement)

    for parameter in student_model.parameters():
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(student_model.parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng([seed, 0])
    losses, started = [], time.monotonic()
    for step in range(1, steps + 1):
        fast, truth = draw(rng, batch)
        loss = kl_to(teacher_of(fast) if truth is None else truth,
                     student.sequence_logits(*stream_inputs(fast, clip.alpha)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(round(float(loss.detach()), 5))
        if step % log_every == 0 or step == steps:
            log.info("step %d/%d: loss %.4f (mean of the last %d), %.1f s", step, steps,
                     float(np.mean(losses[-log_every:])), log_every, time.monotonic() - started)
    after = evaluate(student, held_targets, held, clip.alpha)
    log.info("held-out after: KL %.4f, top-1 agreement with the teacher %.3f", after.kl, after.agreement)

    record = {
        "stream_from": config.name, "checkpoint": config.checkpoint, "form": form, "data": data,
        "steps": steps, "batch": batch, "units": units, "lr": lr, "seed": seed, "targets": targets,
        "target_hops": target_hops, "average_units": average_units, "device": str(on),
        "seconds": round(time.monotonic() - started, 1), "losses": losses,
        "held_out": {"sequences": held_out, "before": asdict(before), "after": asdict(after)},
    }
    write_run(out, record, student_model, config_that_runs(config, form, average_units, student.unit_frames))
    return record


def write_run(out: Path, record: dict, student_model, runs_as: Config) -> None:
    """What a distillation leaves in ``out``: ``model.pt`` (with the config that runs it),
    ``config.yaml`` and ``distill.json``, with any URL in them masked."""
    from streamrec.checkpoints import save_checkpoint
    from streamrec.training.tasks import portable

    out.mkdir(parents=True, exist_ok=True)
    runs_as = runs_as.replace(checkpoint=portable(out / "model.pt"))
    save_checkpoint(out / "model.pt", student_model, runs_as, metadata={"streaming": {
        k: record[k] for k in ("form", "average_units", "targets", "stream_from", "checkpoint", "data", "steps")}})
    write_config(out / "config.yaml", runs_as)
    (out / "distill.json").write_text(json.dumps(redact_data(record), indent=1) + "\n")


def config_that_runs(config: Config, form: str, average_units: int | None, unit_frames: int) -> Config:
    """The teacher's config in the distilled streaming form, without its deployment's cameras and
    brokers (`without_deployment`): what the checkpoint and ``config.yaml`` record, so that ``run
    --checkpoint model.pt`` runs it with no other flag. A hop that is not a whole number of the
    form's units becomes the most whole units within it, so it answers no less often; a hop
    shorter than one unit becomes one unit, and answers less often."""
    hop = streaming_hop_frames(config)
    pipeline = config.pipeline
    if hop % unit_frames:
        pipeline = replace(pipeline, hop_frames=max(1, hop // unit_frames) * unit_frames, hop_seconds=None)
    return without_deployment(config).replace(streaming=StreamingConfig(form=form, average_units=average_units),
                                              pipeline=pipeline)


def refuse_a_streaming_teacher(config: Config) -> None:
    """The teacher is the clip model: weights distilled for a streaming form (a streaming config's
    own checkpoint, such as ``slowfast_tiny_causal``'s) compute another function run as whole clips."""
    from streamrec.checkpoints import load_checkpoint

    made = load_checkpoint(config.checkpoint).metadata.get("streaming") if config.checkpoint else None
    if made:
        origin = f": --stream-from {made['stream_from']}" if made.get("stream_from") else ""
        raise StreamrecError(f"checkpoint {config.checkpoint} was distilled for the {made.get('form')} streaming form, "
                             "so it cannot teach as a clip model (--stream-from names the teacher); name the clip "
                             f"model it was distilled from{origin}")


def stream_from(value: str, checkpoint: str | None = None) -> Config:
    """``--stream-from`` (and ``--checkpoint``): a config, by name or YAML, with its checkpoint or
    the one given; or a streamrec checkpoint, which records its config. Never a teacher without
    weights: distilling a randomly initialised clip model teaches nothing."""
    from streamrec.checkpoints import checkpoint_config
    from streamrec.zoo import ZOO_PREFIX

    if Path(value).suffix in CHECKPOINT_SUFFIXES or value.startswith(ZOO_PREFIX):
        if checkpoint:
            raise StreamrecError(f"--stream-from {value} is a checkpoint already; give the weights once: "
                                 "--stream-from CONFIG --checkpoint FILE, or --stream-from FILE alone")
        return checkpoint_config(value, f"--stream-from slowfast_r50_8x8 --checkpoint {value}")
    config = load_config(value)
    if checkpoint:
        config = config.replace(checkpoint=checkpoint)
    if not config.checkpoint:
        raise StreamrecError(f"config {config.name} names no checkpoint, so the teacher would be random weights; give "
                             "the clip model's weights: --stream-from CONFIG --checkpoint FILE (PySlowFast, "
                             "PyTorchVideo, torchvision or streamrec)")
    return config
