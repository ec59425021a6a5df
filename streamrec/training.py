"""Training: any configured model on procedural clips or on a folder of the user's clips.

Clips are cut exactly as the streaming scheduler cuts them (`sampling.clip_indices`) and fitted with
the capture thread's own `fit_frame`, so a model trains on what it will see. Streaming clips
straddle action boundaries, so training windows do too: a window is labelled by how much of
it an action fills (`window_label`), and windows that are neither clearly the action nor
clearly background are not trained on.

Data sources:

- procedural (`ProceduralVideos`): scenes of `streamrec.procedural`, each a few seconds around
  one action; training and validation scenes come from different seed streams;
- a folder (`FolderVideos`): ``DIR/<class>/*.mp4``, one class per subfolder, each video
  entirely that class, split into training and validation files per class.

An epoch is ``clips_per_epoch`` windows drawn from the training videos, each video equally
often; which window and which augmentation depend only on (seed, epoch, position), so a
resumed run draws the same clips as an uninterrupted one.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, Sequence

import cv2
import numpy as np
import torch
import yaml
from torch import nn

from streamrec.checkpoints import load_checkpoint, load_state_dict_strictly, save_checkpoint
from streamrec.config import REPO_ROOT, ClipConfig, Config, load_labels
from streamrec.errors import StreamrecError
from streamrec.evaluation import Segment
from streamrec.models import UInt8Clips, build_model
from streamrec.procedural import BACKGROUND, LABELS, Scene, action_scene
from streamrec.sampling import clip_duration, clip_indices, split_pathways
from streamrec.transforms import fit_frame

POSITIVE_SHARE = 0.4  # an action filling this share of a window (or of itself, if shorter) labels it
BACKGROUND_SHARE = 0.15  # below this for every action, the window is background; in between, ambiguous
ACTION_WINDOW_RATE = 0.75  # in a video with background around its action, this share of windows shows the action
# ... and this share of those only partly (below FULL_SHARE): a stream sees the start and the end
# of an action first and last, and the model must be sure of it then for events to be on time.
PARTIAL_WINDOW_RATE = 0.4
FULL_SHARE = 0.9
# Training scenes cycle through the classes with background twice: streams get up after every
# fall and sit, and getting up is what the actions are most easily confused with.
TRAINING_SCENE_CYCLE = (*LABELS, BACKGROUND)
CURRICULUM_SHARE = 0.5  # procedural clutter and noise ramp from none to full over this share of the epochs
HEAD_PREFIX = "head.projection."  # the classifier of every registered arch (PySlowFast's name)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
STATE_FILE = "train_state.pt"


# --------------------------------------------------------------------------- videos and windows


class Video(Protocol):
    """A video the sampler can cut windows from: timestamps, labelled segments, frames by index."""

    @property
    def fps(self) -> float: ...

    @property
    def times(self) -> np.ndarray: ...

    @property
    def segments(self) -> list[Segment]: ...

    def frame(self, index: int) -> np.ndarray: ...


@dataclass(frozen=True)
class DecodedVideo:
    """A user's video held in memory, every frame one class."""

    path: Path
    pixels: np.ndarray  # uint8 [N, H, W, 3] RGB, short side already reduced to what training needs
    fps: float
    label: str

    @property
    def times(self) -> np.ndarray:
        return np.arange(len(self.pixels)) / self.fps

    @property
    def segments(self) -> list[Segment]:
        return [Segment(0.0, len(self.pixels) / self.fps, self.label)]

    def frame(self, index: int) -> np.ndarray:
        return self.pixels[index]


def action_share(segments: Sequence[Segment], start: float, end: float) -> tuple[str | None, float]:
    """The action filling most of the window ``[start, end]`` seconds, and its share.

    An action's share is its overlap with the window divided by the shorter of the two, so a
    fall shorter than a clip still labels the windows that contain most of it.
    """
    best, best_share = None, 0.0
    for segment in segments:
        overlap = max(0.0, min(end, segment.end) - max(start, segment.start))
        share = overlap / max(min(end - start, segment.duration), 1e-9)
        if share > best_share:
            best, best_share = segment.label, share
    return best, best_share


def window_label(segments: Sequence[Segment], start: float, end: float, background: str | None) -> str | None:
    """The label of the window ``[start, end]`` seconds, or None when it is ambiguous."""
    return label_for_share(*action_share(segments, start, end), background)


def label_for_share(label: str | None, share: float, background: str | None) -> str | None:
    """The action when it fills enough of the window, background when nothing does, else None."""
    if share >= POSITIVE_SHARE:
        return label
    return background if share < BACKGROUND_SHARE else None


def labelled_windows(video: Video, clip: ClipConfig,
                     background: str | None) -> tuple[np.ndarray, list[str | None], np.ndarray]:
    """Every window end a stream would serve (a full clip of history), its label and its action share."""
    times, length = video.times, clip_duration(clip)
    ends = np.flatnonzero(times >= times[0] + length - 1e-6)
    if ends.size == 0:  # a video shorter than a clip: its last frame, earlier frames repeated
        ends = np.array([len(times) - 1])
    found = [action_share(video.segments, times[e] - length, times[e]) for e in ends]
    labels = [label_for_share(label, share, background) for label, share in found]
    return ends, labels, np.array([share for _, share in found])


def choose_window(video: Video, clip: ClipConfig, background: str | None,
                  rng: np.random.Generator) -> tuple[int, str]:
    """A window end and its label: mostly on the action, often only partly (where a stream first and
    last sees it), else anywhere unambiguous."""
    ends, labels, shares = labelled_windows(video, clip, background)
    usable = [i for i, label in enumerate(labels) if label is not None]
    actions = [i for i in usable if labels[i] != background]
    pool = actions if actions and (rng.random() < ACTION_WINDOW_RATE or len(actions) == len(usable)) else usable
    if pool is actions and rng.random() < PARTIAL_WINDOW_RATE:
        pool = [i for i in actions if shares[i] < FULL_SHARE] or actions
    pick = pool[int(rng.integers(len(pool)))]
    return int(ends[pick]), labels[pick]  # type: ignore[return-value]


def centre_window(video: Video, clip: ClipConfig, background: str | None) -> tuple[int, str]:
    """The validation window: centred on the (first) action, or in the middle of a background video."""
    ends, labels, _ = labelled_windows(video, clip, background)
    times, half = video.times, clip_duration(clip) / 2
    segments = [s for s in video.segments if s.label != background]
    centre = (segments[0].start + segments[0].end) / 2 if segments else (times[0] + times[-1]) / 2
    pick = int(np.argmin(np.abs(times[ends] - half - centre)))
    label = labels[pick]
    if label is None:
        raise StreamrecError("internal: a centred validation window is ambiguous")
    return int(ends[pick]), label


# --------------------------------------------------------------------------- clips


@dataclass(frozen=True)
class Augmentation:
    """Drawn once per clip, applied to every frame alike (the figure must not jump between frames)."""

    zoom: float  # > 1 zooms in
    shift: tuple[float, float]  # where the crop sits, 0..1 of the slack
    gain: np.ndarray  # per-channel contrast
    offset: float  # brightness
    jpeg_quality: int | None  # compress each source frame like a camera's encoder

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "Augmentation":
        return cls(
            zoom=float(rng.uniform(0.92, 1.2)),
            shift=(float(rng.random()), float(rng.random())),
            gain=(rng.uniform(0.75, 1.25) * rng.uniform(0.9, 1.1, 3)).astype(np.float32),
            offset=float(rng.uniform(-25, 25)),
            jpeg_quality=int(rng.integers(30, 90)) if rng.random() < 0.3 else None,
        )


def fit_clip(frames: list[np.ndarray], clip: ClipConfig, augment: Augmentation | None = None) -> np.ndarray:
    """Source frames → uint8 ``[T, crop, crop, 3]``: exactly `fit_frame` without augmentation.

    Left-right flips are deliberately absent: they would turn walking left into walking right.
    """
    if augment is None:
        return np.stack([fit_frame(f, clip.short_side, clip.crop_size) for f in frames])
    field = max(clip.crop_size, round(clip.crop_size * augment.zoom))
    short = max(field, round(clip.short_side * augment.zoom))
    out = []
    for frame in frames:
        if augment.jpeg_quality:
            _, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, augment.jpeg_quality])
            frame = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        out.append(fit_frame(frame, short, field))
    stacked = np.stack(out)
    top = int(augment.shift[0] * (field - clip.crop_size))
    left = int(augment.shift[1] * (field - clip.crop_size))
    stacked = stacked[:, top:top + clip.crop_size, left:left + clip.crop_size].astype(np.float32)
    mean = stacked.mean()
    stacked = (stacked - mean) * augment.gain + mean + augment.offset
    return np.clip(stacked, 0, 255).astype(np.uint8)


def cut_clip(video: Video, end: int, clip: ClipConfig, augment: Augmentation | None = None) -> np.ndarray:
    """The clip ending at frame ``end``, its frames picked as a stream's (`sampling.clip_indices`), fitted."""
    indices = [int(i) for i in clip_indices(clip, video.fps, end, 0, lambda idx: video.times[idx])]
    rendered = {i: video.frame(i) for i in set(indices)}  # at low frame rates a clip repeats frames
    return fit_clip([rendered[i] for i in indices], clip, augment)


# --------------------------------------------------------------------------- data sources


class VideoSet(Protocol):
    labels: list[str]  # class names in model output order
    background: str | None

    def __len__(self) -> int: ...

    def video(self, index: int) -> Video: ...


@dataclass
class ProceduralVideos:
    """Scenes of one split, seeded by (seed, split, index); classes take turns in ``cycle``."""

    labels: list[str]
    count: int
    seed: int
    split: int  # 0 train, 1 validation, 2 test
    difficulty: float = 1.0  # clutter and noise of the scenes (see `random_appearance`)
    cycle: tuple[str, ...] = LABELS
    background: str | None = BACKGROUND

    def __len__(self) -> int:
        return self.count

    def scene(self, index: int) -> Scene:
        seed = int(np.random.SeedSequence([self.seed, self.split, index]).generate_state(1)[0])
        return action_scene(seed, self.cycle[index % len(self.cycle)], self.difficulty)

    def video(self, index: int) -> Video:
        return self.scene(index)


@dataclass
class FolderVideos:
    labels: list[str]
    videos: list[DecodedVideo]
    background: str | None = None

    def __len__(self) -> int:
        return len(self.videos)

    def video(self, index: int) -> Video:
        return self.videos[index]


def procedural_splits(labels: list[str], seed: int, train_scenes: int, val_scenes: int) -> tuple[ProceduralVideos, ...]:
    missing = [name for name in LABELS if name not in labels]
    if missing:
        raise StreamrecError(f"the config's label file lacks the procedural classes {', '.join(missing)}; "
                             "train procedural data with labels: actions")
    return (ProceduralVideos(labels, train_scenes, seed, 0, cycle=TRAINING_SCENE_CYCLE),
            ProceduralVideos(labels, val_scenes, seed, 1), ProceduralVideos(labels, val_scenes, seed, 2))


def folder_splits(root: Path, clip: ClipConfig, val_fraction: float, seed: int,
                  assumed_fps: float) -> tuple[FolderVideos, FolderVideos]:
    """Decode ``root/<class>/*`` and split each class's files into training and validation."""
    if not root.is_dir():
        raise StreamrecError(f"data folder {root} does not exist; give a folder with one subfolder per class")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise StreamrecError(f"data folder {root} has no class subfolders; put each class's clips in "
                             f"{root}/<class name>/*.mp4")
    labels = [c.name for c in classes]
    rng = np.random.default_rng([seed, 4])
    train, val = [], []
    for folder in classes:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not files:
            raise StreamrecError(f"class folder {folder} has no videos ({', '.join(VIDEO_SUFFIXES)}); "
                                 "add clips or remove the folder")
        files = [files[i] for i in rng.permutation(len(files))]
        held_out = min(len(files) - 1, round(len(files) * val_fraction))
        decoded = [decode_video(f, folder.name, clip, assumed_fps) for f in files]
        val += decoded[:held_out]
        train += decoded[held_out:]
    return FolderVideos(labels, train), FolderVideos(labels, val)


def decode_video(path: Path, label: str, clip: ClipConfig, assumed_fps: float) -> DecodedVideo:
    """Every frame, reduced so the short side leaves room for zoom augmentation."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = fps if math.isfinite(fps) and 1.0 <= fps <= 1000.0 else assumed_fps
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            scale = clip.short_side * 1.25 / min(frame.shape[:2])
            if scale < 1:
                frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            frames.append(frame)
    finally:
        capture.release()
    if not frames:
        raise StreamrecError(f"cannot read video {path}; is it a video file OpenCV can decode?")
    return DecodedVideo(path, np.stack(frames), float(fps), label)


class TrainingClips(torch.utils.data.Dataset):
    """One epoch's training clips: item i is a random window of video ``i mod len(videos)``, augmented."""

    def __init__(self, videos: VideoSet, clip: ClipConfig, clips_per_epoch: int, seed: int, epoch: int):
        self.videos, self.clip, self.size, self.seed, self.epoch = videos, clip, clips_per_epoch, seed, epoch
        self.order = np.random.default_rng([seed, 5, epoch]).permutation(
            np.resize(np.arange(len(videos)), clips_per_epoch))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        rng = np.random.default_rng([self.seed, 6, self.epoch, i])
        index = int(self.order[i])
        video = self.videos.video(index)
        end, label = choose_window(video, self.clip, self.videos.background, rng)
        frames = cut_clip(video, end, self.clip, Augmentation.draw(rng))
        return frames, self.videos.labels.index(label)


def curriculum(videos: VideoSet, epoch: int, epochs: int) -> VideoSet:
    """Procedural scenes start clean and reach full clutter and noise after `CURRICULUM_SHARE` of the epochs.

    A small network from scratch finds the figure's motion in a few hundred steps on plain
    backgrounds, and hardly at all when the first clips are fully cluttered.
    """
    if not isinstance(videos, ProceduralVideos):
        return videos
    return replace(videos, difficulty=min(1.0, epoch / max(1.0, CURRICULUM_SHARE * epochs)))


def evaluation_clips(videos: VideoSet, clip: ClipConfig) -> tuple[np.ndarray, np.ndarray]:
    """Each video's centred window, unaugmented: ``uint8 [N, T, H, W, 3]`` and labels."""
    clips, targets = [], []
    for index in range(len(videos)):
        video = videos.video(index)
        end, label = centre_window(video, clip, videos.background)
        clips.append(cut_clip(video, end, clip))
        targets.append(videos.labels.index(label))
    return np.stack(clips), np.array(targets)


# --------------------------------------------------------------------------- model


def forward(model: UInt8Clips, clip: ClipConfig, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Logits for a batch of Fast-rate clips ``uint8 [B, T, H, W, 3]``, split into pathways like the engine does."""
    pathways = split_pathways(clip, np.asarray(frames))
    return model(*(torch.from_numpy(np.ascontiguousarray(pathways[name])) for name in clip.input_names))


@torch.inference_mode()
def predict(model: UInt8Clips, clip: ClipConfig, clips: np.ndarray, batch_size: int = 16) -> np.ndarray:
    model.eval()
    return np.concatenate([forward(model, clip, clips[i:i + batch_size]).numpy()
                           for i in range(0, len(clips), batch_size)])


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


def initial_weights(network: nn.Module, path: str, new_head: bool, labels: list[str]) -> None:
    """Fine-tuning: a checkpoint's weights (any format `load_checkpoint` reads), with a fresh classifier when ``new_head``."""
    checkpoint = load_checkpoint(path)
    state = checkpoint.state_dict
    if new_head:
        fresh = network.state_dict()
        state = {**{k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)},
                 **{k: v for k, v in fresh.items() if k.startswith(HEAD_PREFIX)}}
    elif checkpoint.num_classes != len(labels) or checkpoint.labels not in (None, labels):
        raise StreamrecError(f"checkpoint {path} was trained on other classes ({checkpoint.num_classes}) than the "
                             f"data's ({len(labels)}); pass --new-head to train a new classifier")
    load_state_dict_strictly(network, state, path)


# --------------------------------------------------------------------------- the training run


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
        initial_weights(network, settings.init_checkpoint, settings.new_head, labels)
    model = UInt8Clips(network, clip)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(settings.clips_per_epoch / settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr, total_steps=settings.epochs * steps_per_epoch,
                                                   pct_start=0.15)
    history: list[EpochRecord] = []
    first_epoch = 0
    state_path = settings.out / STATE_FILE
    if resume:
        first_epoch, history = _restore(state_path, model, optimizer, schedule, settings)

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
        _save_state(state_path, model, optimizer, schedule, epoch + 1, history, settings)

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


def _save_state(path: Path, model: nn.Module, optimizer, schedule, epoch: int, history: list[EpochRecord],
                settings: TrainSettings) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "history": [vars(r) for r in history],
                "settings": _resume_key(settings)}, temporary)
    temporary.replace(path)  # a crash mid-write leaves the previous state intact


def _resume_key(settings: TrainSettings) -> dict:
    """What must not change between a run and its resumption."""
    return {k: v for k, v in vars(settings).items() if k not in ("out", "workers", "command")}


def _restore(path: Path, model: nn.Module, optimizer, schedule, settings: TrainSettings) -> tuple[int, list[EpochRecord]]:
    if not path.is_file():
        raise StreamrecError(f"nothing to resume: {path} does not exist (it is removed when a run finishes)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["settings"] != _resume_key(settings):
        changed = [k for k, v in _resume_key(settings).items() if state["settings"].get(k) != v]
        raise StreamrecError(f"--resume with different settings ({', '.join(changed)}); repeat the original command "
                             "with --resume")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    print(f"resuming after epoch {state['epoch']}", file=sys.stderr)
    return state["epoch"], [EpochRecord(**r) for r in state["history"]]


def training_report(result: TrainResult, settings: TrainSettings, config: Config) -> str:
    """TRAINING.md: how the weights were made and how well they do, written by the run itself."""
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
