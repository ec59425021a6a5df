"""A tiny person detector for the procedural rooms, trained here and exported as a YOLOv8-layout
ONNX graph that ``detection.detector: onnx:FILE`` runs (`streamrec.detection.onnx_yolo`).

The motion detector needs no weights but loses people it cannot see move: someone who stood
still long enough fades into the background and leaves a ghost where they stood, and people
close together share one blob. A detector that looks at each keyframe on its own has neither
failure. This one is small (a few hundred thousand weights, a fraction of a GFLOP per frame) and
knows only the procedural generator's figures: it is the demo's detector, as the tiny SlowFast is
the demo's classifier. On real cameras use a YOLO export (docs: ``onnx:FILE``).

The network is anchor-free, FCOS-like: a strided CNN, its stride-16 map upsampled onto the
stride-8 one, and one head that gives each stride-8 cell a person score and the distances from
the cell's centre to the box's four edges. Cells near a person's box centre (within
`CENTRE_RADIUS` cells, and inside the box) learn that person, the smallest box where two claim a
cell; cells of people mostly hidden by nearer ones are left out of the loss. The graph decodes
its own boxes, so its output is Ultralytics' ``[B, 4 + 1, cells]``: ``cx, cy, w, h`` in input
pixels, then the sigmoid person score.

Frames are rendered by `streamrec.procedural_group` from training rooms (split 0 of
`streamrec.training.data.GroupScenes`), letterboxed exactly as the ONNX detector letterboxes
them, and augmented with flips, brightness and contrast and a JPEG round trip (what a video
codec does to edges). Validation rooms (split 1) give the held-out figures in ``detector.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from streamrec.config import ClipConfig
from streamrec.detection.boxes import iou_matrix, nms
from streamrec.detection.onnx_yolo import letterbox
from streamrec.training.data import GroupScenes
from streamrec.transforms import fit_clip_frame, frame_fit

INPUT_SIZE = (320, 256)  # width, height: a 320x240 room letterboxed with 8 px above and below, not resized
STRIDE = 8  # pixels per output cell
CENTRE_RADIUS = 2.5  # cells from a box's centre that learn it
HIDDEN = 0.6  # people with more of their box hidden by nearer people are left out of the loss
EVAL_SCORE = 0.2  # the detection.score_threshold the held-out figures are taken at
EVAL_NMS = 0.5  # ... and detection.nms_iou


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class TinyPersonDetector(nn.Module):
    """Images ``[B, 3, H, W]`` in [0, 1] -> score logits ``[B, 1, H/8, W/8]`` and edge distances
    ``[B, 4, H/8, W/8]`` (left, top, right, bottom, in pixels); `DecodedDetector` makes boxes."""

    def __init__(self, width: int = 16):
        super().__init__()
        c = width
        self.stride8 = nn.Sequential(_conv(3, c // 2, 2), _conv(c // 2, c, 2), _conv(c, c), _conv(c, 2 * c, 2),
                                     _conv(2 * c, 2 * c))
        self.stride16 = nn.Sequential(_conv(2 * c, 4 * c, 2), _conv(4 * c, 4 * c), _conv(4 * c, 4 * c, dilation=2))
        self.lateral = nn.Conv2d(4 * c, 2 * c, 1)
        self.fuse = _conv(2 * c, 2 * c)
        self.head = nn.Conv2d(2 * c, 5, 1)
        nn.init.constant_(self.head.bias[:1], -4.0)  # few cells hold a person: start every score near 0.02

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fine = self.stride8(images)
        coarse = self.stride16(fine)
        fused = self.fuse(fine + F.interpolate(self.lateral(coarse), size=fine.shape[-2:], mode="nearest"))
        out = self.head(fused)
        return out[:, :1], F.softplus(out[:, 1:]) * (4 * STRIDE)


def cell_centres(height: int, width: int) -> np.ndarray:
    """``[2, height, width]``: x and y of each output cell's centre, in input pixels."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([(xs + 0.5) * STRIDE, (ys + 0.5) * STRIDE])


class DecodedDetector(nn.Module):
    """The exported graph: `TinyPersonDetector` with its boxes decoded, in YOLOv8's output layout."""

    def __init__(self, net: TinyPersonDetector):
        super().__init__()
        self.net = net
        width, height = INPUT_SIZE
        self.register_buffer("centres", torch.from_numpy(cell_centres(height // STRIDE, width // STRIDE)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits, edges = self.net(images)
        x, y = self.centres[0], self.centres[1]
        left, top, right, bottom = edges.unbind(1)
        cx, cy = x + (right - left) / 2, y + (bottom - top) / 2
        rows = torch.stack([cx, cy, left + right, top + bottom, torch.sigmoid(logits[:, 0])], 1)
        return rows.flatten(2)


# --------------------------------------------------------------------------- data

@dataclass(frozen=True)
class DetectorSample:
    image: np.ndarray  # uint8 [H, W, 3], letterboxed into INPUT_SIZE
    boxes: np.ndarray  # float32 [K, 4] in input pixels
    hidden: np.ndarray  # bool [K]: mostly hidden by nearer people (left out of the loss)


def render_samples(scenes: GroupScenes, rng: np.random.Generator, count: int, augment: bool,
                   clip: ClipConfig | None = None) -> list[DetectorSample]:
    """``count`` frames of one random room at random moments, letterboxed, with their people's boxes
    (one room serves several frames: building a room costs more than drawing a frame). With a
    ``clip``, each frame is first fitted to that clip's input as capture fits it: per-person mode
    hands the detector the model's input frame, not the camera's."""
    scene = scenes.scene(int(rng.integers(len(scenes))))
    samples = []
    while len(samples) < count:
        index = int(rng.integers(scene.num_frames))
        drawings = scene.drawings(index)
        people = scene.people(index, drawings)
        if not people and rng.random() > 0.1:  # mostly frames with someone on them; a few empty rooms too
            continue
        frame = scene.frame(index, drawings)
        boxes = np.array([p.box for p in people], np.float32).reshape(-1, 4)
        hidden = np.array([p.occluded > HIDDEN for p in people], bool)
        if augment:
            frame = _augmented(frame, rng)
            if rng.random() < 0.5:
                frame = np.ascontiguousarray(frame[:, ::-1])
                boxes = np.stack([frame.shape[1] - boxes[:, 2], boxes[:, 1], frame.shape[1] - boxes[:, 0],
                                  boxes[:, 3]], 1)
        if clip is not None:
            boxes = frame_fit(frame.shape[1], frame.shape[0], clip.short_side, clip.crop_size, clip.fit).to_input(boxes)
            frame = fit_clip_frame(frame, clip)
        width, height = INPUT_SIZE
        image = np.empty((height, width, 3), np.uint8)
        placed = letterbox(frame, width, height, image)
        shift = np.array([placed.left, placed.top, placed.left, placed.top], np.float32)
        samples.append(DetectorSample(image, (boxes * placed.scale + shift).astype(np.float32), hidden))
    return samples


class TrainingBatches(torch.utils.data.IterableDataset):
    """Endless augmented training batches (``batch_tensors``), rendered in a loader process while the model trains."""

    def __init__(self, scenes: GroupScenes, batch: int, seed: int, frames_per_room: int = 4,
                 clip: ClipConfig | None = None):
        self.scenes, self.batch, self.seed, self.frames_per_room = scenes, batch, seed, frames_per_room
        self.clip = clip

    def __iter__(self):
        rng = np.random.default_rng([self.seed, 10])
        width, height = INPUT_SIZE
        centres = cell_centres(height // STRIDE, width // STRIDE)
        while True:
            samples: list[DetectorSample] = []
            while len(samples) < self.batch:
                samples += render_samples(self.scenes, rng, min(self.frames_per_room, self.batch - len(samples)),
                                          augment=True, clip=self.clip)
            yield batch_tensors(samples, centres)


def _augmented(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gain, offset = rng.uniform(0.75, 1.25), rng.uniform(-25, 25)
    frame = np.clip(frame.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)
    if rng.random() < 0.7:
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 95))])
        frame = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    return frame


def cell_targets(boxes: np.ndarray, hidden: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per cell: which box it learns (-1 none), and whether it is left out of the loss."""
    _, height, width = centres.shape
    owner = np.full((height, width), -1, np.int64)
    ignore = np.zeros((height, width), bool)
    best_area = np.full((height, width), np.inf, np.float32)
    x, y = centres
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        cx, cy, reach = (x1 + x2) / 2, (y1 + y2) / 2, CENTRE_RADIUS * STRIDE
        near = (np.abs(x - cx) < reach) & (np.abs(y - cy) < reach) & (x > x1) & (x < x2) & (y > y1) & (y < y2)
        if not near.any():  # a box thinner than a cell: its nearest cell learns it
            j, i = min(max(int(cy // STRIDE), 0), height - 1), min(max(int(cx // STRIDE), 0), width - 1)
            near = np.zeros_like(near)
            near[j, i] = True
        if hidden[k]:
            ignore |= near
            continue
        area = (x2 - x1) * (y2 - y1)
        take = near & (area < best_area)
        owner[take], best_area[take] = k, area
    ignore &= owner < 0
    return owner, ignore


def batch_tensors(samples: list[DetectorSample], centres: np.ndarray) -> dict[str, torch.Tensor]:
    images = np.stack([s.image for s in samples]).transpose(0, 3, 1, 2)
    owners, ignores, edges = [], [], []
    x, y = centres
    for s in samples:
        owner, ignore = cell_targets(s.boxes, s.hidden, centres)
        box = s.boxes[np.maximum(owner, 0)] if len(s.boxes) else np.zeros(owner.shape + (4,), np.float32)
        edges.append(np.stack([x - box[..., 0], y - box[..., 1], box[..., 2] - x, box[..., 3] - y]))
        owners.append(owner)
        ignores.append(ignore)
    return {"images": torch.from_numpy(images).float() / 255, "positive": torch.from_numpy(np.stack(owners) >= 0),
            "ignore": torch.from_numpy(np.stack(ignores)), "edges": torch.from_numpy(np.stack(edges)).float()}


def detector_loss(logits: torch.Tensor, edges: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Scores: binary cross-entropy over every cell not left out; boxes: GIoU loss on the cells that learn a person."""
    positive, counted = batch["positive"], ~batch["ignore"]
    score = F.binary_cross_entropy_with_logits(logits[:, 0], positive.float(), reduction="none")
    positives = max(int(positive.sum()), 1)
    score_loss = (score * counted).sum() / positives
    if not positive.any():
        return score_loss
    predicted = edges.permute(0, 2, 3, 1)[positive]
    true = batch["edges"].permute(0, 2, 3, 1)[positive]
    return score_loss + 2.0 * giou_loss(predicted, true).mean()


def giou_loss(predicted: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """1 - GIoU of boxes given as (left, top, right, bottom) distances from the same point."""
    pl, pt, pr, pb = predicted.unbind(1)
    tl, tt, tr, tb = true.unbind(1)
    inter = (torch.minimum(pl, tl) + torch.minimum(pr, tr)) * (torch.minimum(pt, tt) + torch.minimum(pb, tb))
    union = (pl + pr) * (pt + pb) + (tl + tr) * (tt + tb) - inter
    hull = (torch.maximum(pl, tl) + torch.maximum(pr, tr)) * (torch.maximum(pt, tt) + torch.maximum(pb, tb))
    iou = inter / union.clamp(min=1e-6)
    return 1 - iou + (hull - union) / hull.clamp(min=1e-6)


# --------------------------------------------------------------------------- judging

def detections(decoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One image's decoded output ``[5, cells]`` as kept boxes (x1, y1, x2, y2) and scores, after
    the detection config's default score threshold and NMS."""
    cx, cy, w, h, score = decoded
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    keep = np.flatnonzero(score >= EVAL_SCORE)
    boxes, score = boxes[keep], score[keep]
    kept = nms(boxes, score, EVAL_NMS)
    return boxes[kept], score[kept]


def held_out_figures(model: DecodedDetector, samples: list[DetectorSample]) -> dict[str, float]:
    """AP at IoU 0.5 (VOC's all-point interpolation) and recall / precision at the default
    threshold, over people not mostly hidden; a hidden person found counts neither way."""
    with torch.no_grad():
        outputs = [model(torch.from_numpy(s.image.transpose(2, 0, 1)[None]).float() / 255)[0].numpy()
                   for s in samples]
    scored, truths, found = [], 0, 0
    for sample, output in zip(samples, outputs):
        boxes, scores = detections(output)
        seen = ~sample.hidden
        truths += int(seen.sum())
        taken = np.zeros(len(sample.boxes), bool)
        overlaps = iou_matrix(boxes, sample.boxes) if len(sample.boxes) else np.zeros((len(boxes), 0))
        for row in np.argsort(-scores, kind="stable"):
            candidates = np.flatnonzero((overlaps[row] >= 0.5) & ~taken) if overlaps.shape[1] else []
            if len(candidates):
                k = candidates[np.argmax(overlaps[row][candidates])]
                taken[k] = True
                if seen[k]:
                    scored.append((scores[row], True))
                continue
            scored.append((scores[row], False))
        found += int((taken & seen).sum())
    scored.sort(key=lambda pair: -pair[0])
    hits = np.cumsum([hit for _, hit in scored]) if scored else np.zeros(0)
    recall = hits / max(truths, 1)
    precision = hits / np.arange(1, len(hits) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    steps = np.diff(np.concatenate([[0.0], recall]))
    return {"ap50": round(float((steps * envelope).sum()), 4), "recall": round(found / max(truths, 1), 4),
            "precision": round(float(hits[-1] / len(hits)) if len(hits) else 0.0, 4), "people": truths,
            "frames": len(samples)}


# --------------------------------------------------------------------------- training

def train_detector(out: Path, *, steps: int, batch: int, lr: float, seed: int, train_scenes: int = 2000,
                   val_frames: int = 300, width: int = 16, workers: int = 1, clip: ClipConfig | None = None,
                   command: str = "", log=print) -> dict:
    """Train `TinyPersonDetector` and write ``model.onnx`` (the graph `onnx_yolo` runs, its weights
    in it) and ``detector.json`` (command, settings, timing, held-out figures) into ``out``.
    ``clip``: train and score on frames fitted to that clip's input (`render_samples`)."""
    from streamrec.export import _write_graph

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    train_rooms = GroupScenes([], train_scenes, seed, 0)
    val_rooms = GroupScenes([], max(1, val_frames // 10), seed, 1)
    val_rng = np.random.default_rng([seed, 11])
    held_out = [sample for _ in range(val_frames // 10)
                for sample in render_samples(val_rooms, val_rng, 10, False, clip)]
    net = TinyPersonDetector(width)
    model = DecodedDetector(net)
    width_px, height_px = INPUT_SIZE
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.1)
    loader = torch.utils.data.DataLoader(TrainingBatches(train_rooms, batch, seed, clip=clip), batch_size=None,
                                         num_workers=workers)
    start = time.monotonic()
    losses = []
    net.train()
    for step, tensors in zip(range(1, steps + 1), loader):
        logits, edges = net(tensors["images"])
        loss = detector_loss(logits, edges, tensors)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step == steps:
            log(f"step {step}/{steps}: loss {np.mean(losses[-50:]):.4f} ({(time.monotonic() - start) / 60:.1f} min)")
    net.eval()
    figures = held_out_figures(model, held_out)
    example = torch.zeros(1, 3, height_px, width_px)
    _write_graph(model, (example,), ["images"], ["output0"], {"images": {0: "batch"}, "output0": {0: "batch"}},
                 out / "model.onnx", fp16=False, metadata=None)
    record = {"command": command, "steps": steps, "batch": batch, "lr": lr, "seed": seed, "width": width,
              "train_scenes": train_scenes, "input": list(INPUT_SIZE), "stride": STRIDE,
              "frames": f"fitted to a {clip.crop_size} px clip input ({clip.fit})" if clip else "as drawn",
              "parameters": sum(p.numel() for p in net.parameters()),
              "seconds": round(time.monotonic() - start, 1), "final_loss": round(float(np.mean(losses[-50:])), 4),
              "held_out": figures}
    (out / "detector.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
