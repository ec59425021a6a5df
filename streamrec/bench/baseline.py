"""The usual way of running SlowFast, as the yardstick: PySlowFast's demo loop, re-implemented.

What PySlowFast's demo (``tools/demo_net.py`` with ``VideoManager`` and ``Predictor`` from
``slowfast/visualization``) does per window, and what `DemoLoop` does the same way:

1. read ``NUM_FRAMES * SAMPLING_RATE`` frames one after another with ``cv2.VideoCapture``
   into a Python list (64 for the R50 configs; with the default ``BUFFER_SIZE`` 0 windows do
   not overlap, so it predicts once per 64 frames, then reads the next window);
2. per frame, BGR to RGB and resize the short side to the crop size (``cv2_transform.scale``,
   bilinear, float32 result);
3. stack the list into one float32 array, divide by 255, subtract the mean and divide by the
   std, permute to ``C, T, H, W``, pick ``NUM_FRAMES`` frames with
   ``linspace(0, T - 1, NUM_FRAMES).long()``, and pick the Slow frames from those the same
   way (``pack_pathway_output``), all on the CPU in float32;
4. run the PyTorch model, eager, float32, batch 1 (copying the inputs to the GPU first when
   there is one), and take the predictions back to the host.

Two choices differ from the demo, both in the baseline's favour so that the comparison never
flatters this project: the frames are centre-cropped to the square crop after step 2 (the
demo feeds the whole frame, e.g. 224 x 298 px for 4:3 video, a third more work than the
square clip the project's engines see), and the model runs under ``torch.no_grad()`` (the
demo's ``Predictor`` does not disable autograd). The model is the config's own network with
its checkpoint (`streamrec.checkpoints.load_model`), without the uint8 wrapper and without
the batch-norm folding the project's engines do. PyTorch runs with its default thread count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping

import cv2
import numpy as np

from streamrec.config import ClipConfig, Config
from streamrec.errors import StreamrecError


def load_float32_network(config: Config, device: str):
    """The config's network with its weights, as PyTorch eager float32 (no folding, no wrapper)."""
    from streamrec.checkpoints import load_model

    return load_model(config).network.eval().float().to(device)


def scale_short_side(frame: np.ndarray, size: int) -> np.ndarray:
    """PySlowFast's ``cv2_transform.scale``: short side to ``size`` (long side floored), float32."""
    height, width = frame.shape[:2]
    if min(height, width) == size:
        return frame.astype(np.float32)
    if width < height:
        new_width, new_height = size, int(np.floor(height / width * size))
    else:
        new_width, new_height = int(np.floor(width / height * size)), size
    return cv2.resize(frame, (new_width, new_height), interpolation=cv2.INTER_LINEAR).astype(np.float32)


def centre_crop(frame: np.ndarray, size: int) -> np.ndarray:
    height, width = frame.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return frame[top:top + size, left:left + size]


class EagerModel:
    """PyTorch eager float32 at the clip's contract, with the demo's float32 tensor preprocessing."""

    def __init__(self, config: Config, device: str = "cpu"):
        import torch

        self.torch = torch
        self.clip = config.clip
        self.device = torch.device(device)
        self.network = load_float32_network(config, device)
        self.mean = torch.tensor(self.clip.mean, dtype=torch.float32)
        self.std = torch.tensor(self.clip.std, dtype=torch.float32)

    def pathways(self, frames: np.ndarray):
        """Demo preprocessing of one window ``[T, H, W, 3]`` (RGB, 0..255) to ``[slow, fast]`` ``[1, 3, t, H, W]``."""
        torch = self.torch
        clip = self.clip
        x = torch.from_numpy(frames).float() / 255.0
        x = ((x - self.mean) / self.std).permute(3, 0, 1, 2)  # T, H, W, C -> C, T, H, W
        fast = torch.index_select(x, 1, torch.linspace(0, x.shape[1] - 1, clip.num_frames).long())
        if not clip.alpha:
            return [fast.unsqueeze(0)]
        slow = torch.index_select(fast, 1, torch.linspace(0, fast.shape[1] - 1, clip.num_frames // clip.alpha).long())
        return [slow.unsqueeze(0), fast.unsqueeze(0)]

    def predict(self, pathways) -> np.ndarray:
        """One forward pass; the returned host array means the device work is finished."""
        with self.torch.no_grad():
            inputs = [p.to(self.device, non_blocking=True) for p in pathways]
            return self.network(inputs).cpu().numpy()


class EagerEngine:
    """`EagerModel` behind the engine contract, so ``bench engine`` can time it beside the engines.

    Each call converts the uint8 engine inputs to the demo's normalised float32 tensors and runs
    the float32 network: the model call of the usual way, at any batch size.
    """

    name = "eager"
    parallel_calls = 1  # the usual way runs one clip after another

    def __init__(self, model: EagerModel, max_batch: int = 64):
        from streamrec.backends.torch_backend import device_name

        self.model = model
        self.max_batch = max_batch
        self.device = device_name(model.device)

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        model = self.model
        # Contiguous ``B, C, T, H, W``, the layout the demo's index_select hands the model.
        pathways = [((model.torch.from_numpy(inputs[name]).float() / 255.0 - model.mean) / model.std)
                    .permute(0, 4, 1, 2, 3).contiguous() for name in model.clip.input_names]
        return model.predict(pathways)


@dataclass
class WindowTiming:
    """One demo window: when its newest frame was read, and how long each step took."""

    newest_frame_read: float  # time.monotonic()
    read_s: float
    preprocess_s: float
    infer_s: float
    predicted: float  # time.monotonic() when the prediction was on the host


@dataclass
class DemoRun:
    frames_read: int = 0
    windows: list[WindowTiming] = field(default_factory=list)
    wall_s: float = 0.0
    fps: float | None = None  # the file's frame rate


class DemoLoop:
    """The PySlowFast demo loop over one video file (see the module docstring for each step)."""

    def __init__(self, model: EagerModel, clip: ClipConfig):
        self.model = model
        self.clip = clip
        self.window = clip.span  # NUM_FRAMES * SAMPLING_RATE

    def warm_up(self) -> None:
        """One untimed prediction on a blank window: PyTorch's first call pays one-off set-up costs."""
        blank = np.zeros((self.window, self.clip.crop_size, self.clip.crop_size, 3), np.float32)
        self.model.predict(self.model.pathways(blank))

    def run(self, path: str) -> DemoRun:
        capture = cv2.VideoCapture(path)
        if not capture.isOpened():
            raise StreamrecError(f"cannot decode video file '{path}'; check it is a video OpenCV/FFmpeg can read")
        fps = capture.get(cv2.CAP_PROP_FPS)
        result = DemoRun(fps=fps if 1.0 <= fps <= 1000.0 else None)
        start = time.monotonic()
        try:
            while True:
                frames, read_start = [], time.monotonic()
                while len(frames) < self.window:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    frames.append(frame)
                result.frames_read += len(frames)
                if len(frames) < self.window:  # the demo stops when a window cannot be filled
                    break
                newest_read = time.monotonic()
                rgb = [centre_crop(scale_short_side(cv2.cvtColor(f, cv2.COLOR_BGR2RGB), self.clip.crop_size),
                                   self.clip.crop_size) for f in frames]
                pathways = self.model.pathways(np.array(rgb))
                infer_start = time.monotonic()
                self.model.predict(pathways)
                done = time.monotonic()
                result.windows.append(WindowTiming(newest_read, newest_read - read_start, infer_start - newest_read,
                                                   done - infer_start, done))
        finally:
            capture.release()
        result.wall_s = time.monotonic() - start
        return result
