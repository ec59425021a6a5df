"""Streaming forms of clip models: each call takes one hop's new frames and the carried state and
returns logits and the new state, so a hop costs the new frames, not the whole clip (issue 21).

A streaming network is built FROM a clip network and runs that network's own modules (same
parameters) over carried state: every temporal convolution keeps its kernel and reads its past
inputs from the state instead of zero padding; everything that is pointwise in time (batch norms,
activations, spatial convolutions and pools) runs on the new steps alone.

**Steps, units, rates and lags.** A *unit* is one step of the network's coarsest stream: one
Slow frame of SlowFast (``sampling_rate * alpha`` source frames at the training rate), one
final-stage step of a single-pathway ResNet (``sampling_rate`` times its temporal strides). A
call takes ``units`` units (its hop is ``units * unit_frames`` source frames). Every tensor inside
is a stream of steps with a rate (steps per unit: Fast has ``alpha``) and a lag: once the input
has reached the end of unit ``u``, the tensor's newest step is ``rate * u - 1 - lag``.

**Delayed-exact** (``delayed_exact``): a temporal window (kernel ``k``, stride ``s``, the clip
model's padding ``p``) emits output ``j`` once input ``s*j - p + k - 1`` has arrived, so its lag
grows by what its kernel looks ahead; every shortcut, lateral and pathway joined to a later path is
delayed by exactly the lag difference. Each per-step feature then equals the clip model's feature
for that step computed with real neighbouring frames, ``delay_units`` units late. The head's
temporal average becomes the mean of the last clip length of per-step features (carried, exact).

**Causal** (``causal``): each window is moved to the past side (padding ``max(p, k - s)``: a
stride-1 kernel reads only the current and past steps), so nothing waits for the future and the
delay is 0; the same weights compute a different function, which distillation then fits.

**Edges.** Inputs from before the stream started count as zeros, exactly as the clip model's
zero padding (a step counter in the state masks them), so the first full window equals the clip
model on the stream's first clip except at its right edge, which sees real frames. Predictions
are valid from the call where the running mean holds one clip length: ``warmup_units`` units
after a reset.

**State.** One float32 vector per stream (`StateLayout`): the step counter, then every carried
buffer flattened in a fixed order. Zeros are a fresh stream; a batch of streams is their rows
stacked, so an engine gathers and scatters rows per stream. The buffers are past inputs, but for
a stem over several frames, and a narrowing block over one step a unit whose buffer nothing else
reads (the causal form's Slow blocks), which carry what those inputs add to later outputs
instead (`TapSums`). Windows over the same stream (each SlowFast lateral and the next stage's
first Fast block) share one buffer (`share_buffer`).

Only networks whose every operation sees a bounded temporal neighbourhood have these forms:
SlowFast and the single-pathway ResNet (Slow, I3D, C2D, CSN, R(2+1)D-50) without non-local
blocks. X3D's squeeze-excitation and non-local blocks see the whole clip, and transformers attend
over it: `streaming_network` refuses them in one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from streamrec.config import STREAMING_FORMS, ClipConfig
from streamrec.errors import StreamrecError
from streamrec.models import UInt8Clips, VideoNetwork
from streamrec.models.resnet3d import (
    Bottleneck,
    Conv2Plus1D,
    FuseFastToSlow,
    Head,
    PathwayStems,
    ResBlock,
    ResNet3D,
    ResStage,
    Stem,
    average_positions,
)
from streamrec.models.slowfast import SlowFast

FORMS = STREAMING_FORMS  # named where configs check them, without importing torch
DELAYED_EXACT, CAUSAL = FORMS
STATE_INPUT, STATE_OUTPUT = "state", "new_state"  # the engine contract's names (`streamrec.backends.inputs`)


@dataclass(frozen=True)
class Timing:
    """Where a stream of steps stands: ``rate`` steps per unit; its newest step is ``lag`` steps
    behind the newest the input could give it (see the module docstring)."""

    rate: int
    lag: int = 0


@dataclass(frozen=True)
class StateEntry:
    """One carried buffer: its name (the clip module it serves), shape without the batch axis
    ``[C, steps, H, W]``, and where its values start in the state vector."""

    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class StateLayout:
    """The state vector of one stream: the step counter (units seen since the reset, capped at
    ``counter_cap``) at offset 0, then each buffer's values."""

    entries: tuple[StateEntry, ...]
    counter_cap: int

    @property
    def size(self) -> int:
        return 1 + sum(e.size for e in self.entries)

    def describe(self) -> list[dict]:
        """The layout as plain data, for an exported graph's metadata."""
        return [{"name": "counter", "shape": [1], "offset": 0}] + [
            {"name": e.name, "shape": list(e.shape), "offset": e.offset} for e in self.entries]


class StreamContext:
    """One call's view of the state: buffers are taken in layout order and their successors put in
    the same order. Without a state every buffer starts as zeros and their shapes are recorded
    (how a network finds its layout, and how a sequence is trained in one call)."""

    def __init__(self, state: torch.Tensor | None, layout: StateLayout | None, units: int, batch: int,
                 trace: dict | None = None, device: torch.device | str = "cpu"):
        self.state = state
        self.layout = layout if state is not None else None
        self.units = units
        self.counter = state[:, :1] if state is not None else torch.zeros(batch, 1, device=device)
        self.found: list[tuple[str, tuple[int, ...]]] = []
        self.outputs: list[torch.Tensor] = []
        self.trace = trace  # name -> per-step features this call, for tests (None: not recorded)
        self.joins: dict[str, torch.Tensor] = {}  # buffer name -> carried and new steps, for windows sharing it
        self.masks: dict[Timing, torch.Tensor] = {}  # `after_reset`'s, built once a call for each timing
        self._next = 0

    def take(self, name: str, like: torch.Tensor, steps: int) -> torch.Tensor:
        """The buffer ``name``: ``steps`` past steps shaped as ``like`` [B, C, m, H, W]."""
        shape = (like.shape[1], steps, *like.shape[3:])
        if self.layout is None:
            self.found.append((name, tuple(int(d) for d in shape)))
            return like.new_zeros((like.shape[0], *shape))
        entry = self.layout.entries[self._next]
        self._next += 1
        if (entry.name, entry.shape) != (name, tuple(int(d) for d in shape)):
            raise StreamrecError(f"streaming state entry {self._next} is {entry.name} {list(entry.shape)} but the "
                                 f"network asks for {name} {list(shape)}; input frames of the wrong size?")
        # the layout's own shape, a constant: an exported graph then knows every shape but the batch
        return self.state[:, entry.offset:entry.offset + entry.size].reshape(-1, *entry.shape)

    def put(self, buffer: torch.Tensor) -> None:
        self.outputs.append(buffer.flatten(1))

    def steps(self, timing: Timing) -> int:
        """New steps this call of a stream at ``timing``: a number fixed by the network, never read
        from a tensor's shape (which an exported graph would compute at run time)."""
        return timing.rate * self.units

    def after_reset(self, x: torch.Tensor, timing: Timing) -> torch.Tensor:
        """``x``, the new steps of a stream at ``timing``, with those from before the reset zeroed
        (they stand for the clip model's zero padding). A stream with no lag has none, and no
        ops are spent on it (every window of the causal form); streams at one timing share a mask."""
        if timing.lag <= 0:
            return x
        if timing not in self.masks:
            steps = self.steps(timing)
            # each new step's index since the reset, plus one: a whole number, 1 or more from the
            # reset on, so clamping to [0, 1] is the mask in three ops
            first = torch.arange(1 - timing.lag, 1 - timing.lag + steps, dtype=x.dtype, device=x.device)
            counter = self.counter.view(-1, 1, 1, 1, 1)
            self.masks[timing] = (counter * timing.rate + first.view(1, 1, steps, 1, 1)).clamp(0, 1)
        return x * self.masks[timing]

    def record(self, name: str, tensors: Sequence[torch.Tensor], timings: Sequence[Timing]) -> None:
        if self.trace is not None:
            self.trace[name] = (list(tensors), list(timings))

    def new_state(self, cap: int) -> torch.Tensor:
        counter = (self.counter + self.units).clamp(max=float(cap))
        return torch.cat([counter, *self.outputs], dim=1)


# --------------------------------------------------------------------------- operations over time


def window_padding(kernel: int, stride: int, clip_padding: int, form: str) -> int:
    """Steps a window reaches before its output's own step: the clip model's padding, or for the
    causal form the window moved to the past (``kernel - stride``: a stride-1 kernel ends at its
    own step, a strided one within its own period)."""
    return clip_padding if form == DELAYED_EXACT else max(clip_padding, kernel - stride)


class Window:
    """A temporal window op (convolution or pool) over carried past inputs.

    Output ``j`` reads inputs ``s*j - pad .. s*j - pad + k - 1``. The carried buffer holds the
    inputs the next call's outputs still need (``keep``: fixed by the input's lag; negative means
    the first ``-keep`` new inputs are never read). Windows over one stream share one buffer
    (`share_buffer`): it then holds ``skip`` older steps this window does not read. Not an
    `nn.Module`: ``run`` calls the clip network's own module, whose parameters stay where that
    network holds them.
    """

    def __init__(self, name: str, timing: Timing, kernel: int, stride: int, clip_padding: int, form: str,
                 run: Callable[[torch.Tensor], torch.Tensor]):
        if timing.rate % stride:
            raise StreamrecError(f"{name} strides time by {stride}, which does not divide the {timing.rate} steps "
                                 "of its input per unit")
        pad = window_padding(kernel, stride, clip_padding, form)
        lag = -(-(timing.lag + kernel - pad) // stride) - 1  # the newest complete window
        self.name, self.kernel, self.stride, self.run = name, kernel, stride, run
        self.timing_in, self.timing = timing, Timing(timing.rate // stride, lag)
        self.keep = stride * lag + pad - timing.lag
        self.masked = kernel > 1  # a window of one step never mixes a pre-reset step into a later one
        self.buffer, self.skip = name, 0

    def __call__(self, x: torch.Tensor, ctx: StreamContext) -> torch.Tensor:
        return self.apply(self.joined(x, ctx), ctx.steps(self.timing_in))

    def joined(self, x: torch.Tensor, ctx: StreamContext) -> torch.Tensor:
        """The carried inputs and the new ones ``x``, in order, from ``skip`` steps further back
        (the buffer for the next call is put by the first window over it to ask)."""
        if self.buffer in ctx.joins:
            return ctx.joins[self.buffer]
        steps = ctx.steps(self.timing_in)
        if self.masked:
            x = ctx.after_reset(x, self.timing_in)
        if self.keep <= 0:
            return x[:, :, -self.keep:]
        joined = torch.cat([ctx.take(self.buffer, x, self.skip + self.keep), x], dim=2)
        ctx.put(joined[:, :, steps:])
        ctx.joins[self.buffer] = joined
        return joined

    def apply(self, joined: torch.Tensor, new_steps: int) -> torch.Tensor:
        outputs = new_steps // self.stride
        read = self.stride * (outputs - 1) + self.kernel
        available = new_steps + self.keep  # in ``joined`` from ``skip`` on
        if (available - self.kernel) // self.stride + 1 == outputs:
            read = available  # the steps past the last window start no other: no slice
        return self.run(steps_of(joined, self.skip, read))


def share_buffer(windows: Sequence["Window | TapSums | None"]) -> None:
    """Let windows over the same stream (a SlowFast lateral and the next stage's first Fast block)
    carry one buffer, as long as the longest of them needs and named after the first, instead of
    one copy each: every call copies what is carried several times. Windows that carry nothing,
    carry what their inputs add to later outputs, or mask differently keep their own."""
    carried = [w for w in windows if isinstance(w, Window) and w.keep > 0]
    if len(carried) < 2 or len({(w.timing_in, w.masked) for w in carried}) != 1:
        return
    longest = max(w.keep for w in carried)
    for window in carried:
        window.buffer, window.skip = carried[0].name, longest - window.keep


def steps_of(x: torch.Tensor, start: int, steps: int) -> torch.Tensor:
    """Steps ``start .. start + steps - 1`` of ``x`` [B, C, T, H, W]; ``x`` itself when that is all
    of it, so that an exported graph holds no slice that copies a whole tensor to change nothing."""
    return x if start == 0 and steps == x.shape[2] else x[:, :, start:start + steps]


def last_steps(x: torch.Tensor, steps: int) -> torch.Tensor:
    """The last ``steps`` steps of ``x`` (as `steps_of`, no slice when that is all of it)."""
    return x if steps == x.shape[2] else x[:, :, -steps:]


class Delay:
    """A stream at ``timing`` held back ``steps`` steps, so that two paths joined together are at the same step."""

    def __init__(self, name: str, steps: int, timing: Timing):
        self.name, self.steps, self.timing = name, steps, timing

    def __call__(self, x: torch.Tensor, ctx: StreamContext) -> torch.Tensor:
        if self.steps == 0:
            return x
        new = ctx.steps(self.timing)
        carried = ctx.take(self.name, x, self.steps)
        # the carried steps, then the new ones, cut where the next call's carry begins: only the
        # side that straddles the cut is joined (nothing is, when a call's steps are the delay's)
        if self.steps >= new:
            ctx.put(torch.cat([last_steps(carried, self.steps - new), x], dim=2) if self.steps > new else x)
            return steps_of(carried, 0, new)
        ctx.put(last_steps(x, self.steps))
        return torch.cat([carried, x[:, :, :new - self.steps]], dim=2)


def aligned(name: str, timings: Sequence[Timing]) -> tuple[list[Delay], Timing]:
    """Delays that bring streams of one rate to the largest lag among them, and that timing."""
    if len({t.rate for t in timings}) != 1:
        raise StreamrecError(f"{name} joins streams of different rates {[t.rate for t in timings]}")
    lag = max(t.lag for t in timings)
    return [Delay(f"{name}.delay{i}", lag - t.lag, t) for i, t in enumerate(timings)], Timing(timings[0].rate, lag)


def conv_window(name: str, conv: nn.Conv3d, timing: Timing, form: str) -> Window | None:
    """A 3D convolution as a `Window` over time; None where it is pointwise in time (run it as it is)."""
    kernel, stride, padding = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    if conv.dilation[0] != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise StreamrecError(f"{name}: only zero-padded, undilated temporal convolutions have a streaming form")
    if kernel == 1 and stride == 1:
        return None
    if form == DELAYED_EXACT and stride == 1 and 2 * padding != kernel - 1:
        raise StreamrecError(f"{name} pads time by {padding} around a kernel of {kernel}; the delayed-exact form "
                             "needs the symmetric padding (kernel - 1) / 2")

    def run(x: torch.Tensor) -> torch.Tensor:
        return F.conv3d(x, conv.weight, conv.bias, (stride, *conv.stride[1:]), (0, *conv.padding[1:]),
                        conv.dilation, conv.groups)

    return Window(name, timing, kernel, stride, padding, form, run)


class TapSums:
    """A temporal convolution (stride 1 in time) that carries what its past inputs contribute to
    later outputs instead of the inputs: every new step goes through one convolution with all the
    taps' kernels stacked (``kernel x C_out`` outputs), once, and each product is added into the
    output it belongs to. The `Window`'s outputs, to float summation order, but each input is read
    and convolved once.

    What is carried depends on the stream. Over several steps a unit (a Fast stem), each tap's
    products of the inputs later outputs still need (``kernel (kernel - 1) / 2`` tap-steps): every
    output is then one sum over its taps. Over one step a unit, the partial sums of the next
    ``kernel - 1`` outputs, updated step by step (the transposed form of a filter): fewer values
    and fewer ops, but one update a new step.

    A stem over frames runs this way: the window reads the carried frames again at every call,
    and on ONNX Runtime's CPU, which runs a narrow stem's taps stacked over every frame
    (`streamrec.backends.cpu_graph`), convolves them again too. What is carried changes size: the
    tiny model's 3-tap stem keeps half of what its frames took (3 tap-steps of 4 channels at 48 px
    against 2 frames of 3 channels at 96 px), SlowFast R50's 5-tap one 1.7 times as much (10
    tap-steps of 8 channels at 112 px against 4 frames of 3 channels at 224 px). So does a block's
    first convolution over a stream of one new step a unit where its output is narrower than its
    input (`smaller`: a bottleneck narrows 4x, so R50's Slow res4 block keeps 2 steps of partial
    sums of 256 channels, not 2 steps of 1024 inputs): every call copies what is carried several
    times, so less of it is faster."""

    def __init__(self, window: Window, conv: nn.Conv3d):
        self.window, self.conv = window, conv
        self.name, self.timing = window.name, window.timing
        self.partial_sums = window.timing_in.rate == 1  # fixed by the network: the same layout at every hop

    @staticmethod
    def fits(window: Window | None, conv: nn.Module) -> bool:
        """Whether a window can run this way: stride 1 in time (it then keeps ``kernel - 1`` past
        inputs) and one group."""
        return window is not None and isinstance(conv, nn.Conv3d) and window.stride == 1 and conv.groups == 1

    @staticmethod
    def smaller(window: Window | None, conv: nn.Module) -> bool:
        """Whether a window that `fits`, over one new step a unit, carries less as partial sums
        than as past inputs: the same number of steps, of its output channels rather than its
        input's. The rule reads only the network, so the state's layout is the same at every hop."""
        if not TapSums.fits(window, conv) or window.timing_in.rate != 1:
            return False
        out_channels, in_channels = conv.weight.shape[:2]
        return out_channels < in_channels

    def __call__(self, x: torch.Tensor, ctx: StreamContext) -> torch.Tensor:
        window, conv = self.window, self.conv
        steps = ctx.steps(window.timing_in)
        if window.masked:
            x = ctx.after_reset(x, window.timing_in)
        out_channels, in_channels, taps, height, width = conv.weight.shape
        stacked = conv.weight.permute(2, 0, 1, 3, 4).reshape(taps * out_channels, in_channels, 1, height, width)
        # the bias goes with the newest tap, which is never carried: once per output, from inside
        # the convolution rather than one more sum
        bias = None if conv.bias is None else torch.cat(
            [torch.zeros((taps - 1) * out_channels, dtype=conv.bias.dtype, device=conv.bias.device), conv.bias])
        products = F.conv3d(x, stacked, bias, (1, *conv.stride[1:]), (0, *conv.padding[1:]), conv.dilation)
        # newest tap first: group g belongs to the output g steps after its input
        groups = [products[:, (taps - 1 - g) * out_channels:(taps - g) * out_channels] for g in range(taps)]
        if self.partial_sums:
            return self._partial_sums(groups, steps, ctx)
        total = groups[0]
        for tap in range(taps - 1):  # tap i's products of the last taps - 1 - i inputs are carried
            g = taps - 1 - tap
            joined = torch.cat([ctx.take(f"{self.name}.tap{tap}", groups[g], g), groups[g]], dim=2)
            ctx.put(joined[:, :, steps:])
            total = total + steps_of(joined, 0, steps)
        return total

    def _partial_sums(self, groups: list[torch.Tensor], steps: int, ctx: StreamContext) -> torch.Tensor:
        """``sums[j]`` holds what the inputs so far add to the output ``j + 1`` steps ahead of the
        last one; each new step completes the first and shifts the rest."""
        sums = ctx.take(f"{self.name}.sums", groups[0], len(groups) - 1)
        outputs = []
        for step in range(steps):
            now = [steps_of(g, step, 1) for g in groups]
            parts = sums.split(1, dim=2) if len(groups) > 2 else [sums]
            outputs.append(now[0] + parts[0])
            ahead = [now[j] + parts[j] for j in range(1, len(groups) - 1)] + [now[-1]]
            sums = torch.cat(ahead, dim=2) if len(ahead) > 1 else ahead[0]
        ctx.put(sums)
        return torch.cat(outputs, dim=2) if steps > 1 else outputs[0]


def pool_window(name: str, pool: nn.MaxPool3d, timing: Timing, form: str) -> Window | None:
    """A max-pool over time (I3D's and C2D's after res2) as a `Window`; None for a pool of one step."""
    kernel, stride, padding = (tuple(v) if isinstance(v, (tuple, list)) else (v,) * 3
                               for v in (pool.kernel_size, pool.stride, pool.padding))
    if padding[0] != 0 or pool.dilation not in (1, (1, 1, 1)) or pool.ceil_mode:
        raise StreamrecError(f"{name}: only unpadded max-pools over time have a streaming form")
    if kernel[0] == 1 and stride[0] == 1:
        return None

    def run(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(x, kernel, (stride[0], *stride[1:]), (0, *padding[1:]))

    return Window(name, timing, kernel[0], stride[0], 0, form, run)


def pointwise_in_time(name: str, module: nn.Module | None) -> None:
    """Refuse a module that would mix steps where the streaming form runs it on new steps only."""
    if isinstance(module, nn.MaxPool3d):
        size = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        stride = module.stride if isinstance(module.stride, int) else module.stride[0]
        if size != 1 or stride != 1:
            raise StreamrecError(f"{name} pools over time, which this streaming form cannot carry")


# --------------------------------------------------------------------------- the clip model's blocks, streamed


def run_conv(window: Window | TapSums | None, conv: nn.Module, x: torch.Tensor, ctx: StreamContext) -> torch.Tensor:
    return conv(x) if window is None else window(x, ctx)


class StreamStem:
    """`Stem`: its convolution over time (as `TapSums` where it can), then its norm, activation and
    spatial pool as they are."""

    def __init__(self, name: str, stem: Stem, timing: Timing, form: str):
        self.stem = stem
        window = conv_window(f"{name}.conv", stem.conv, timing, form)
        self.conv = TapSums(window, stem.conv) if TapSums.fits(window, stem.conv) else window
        pointwise_in_time(name, stem.pool_layer)
        self.timing = self.conv.timing if self.conv else timing

    def __call__(self, x: torch.Tensor, ctx: StreamContext) -> torch.Tensor:
        stem = self.stem
        x = stem.relu(stem.bn(run_conv(self.conv, stem.conv, x, ctx)))
        return x if stem.pool_layer is None else stem.pool_layer(x)


class StreamBlock:
    """`ResBlock` with a `Bottleneck` branch: the branch's convolutions over time, its shortcut
    delayed by as many steps as the branch lags behind it."""

    def __init__(self, name: str, block: ResBlock, timing: Timing, form: str):
        branch = block.branch2
        if not isinstance(branch, Bottleneck):
            raise StreamrecError(f"{name}: a {type(branch).__name__} branch has no streaming form")
        self.block, self.branch = block, branch
        self.a = conv_window(f"{name}.branch2.a", branch.a, timing, form)
        after_a = self.a.timing if self.a else timing
        self.factorized = isinstance(branch.b, Conv2Plus1D)
        if self.factorized:
            self.b = conv_window(f"{name}.branch2.b.conv_t", branch.b.conv_t, after_a, form)
        else:
            self.b = conv_window(f"{name}.branch2.b", branch.b, after_a, form)
        after_b = self.b.timing if self.b else after_a
        self.shortcut = conv_window(f"{name}.branch1", block.branch1, timing, form) if block.branch1 else None
        after_shortcut = self.shortcut.timing if self.shortcut else timing
        # A shortcut that is pointwise in time can read its delayed input from the first window's
        # own buffer, which already holds the steps it needs: no second copy in the state. Unless
        # the window's partial sums and the shortcut's own delay are fewer values still.
        lag = after_b.lag - after_shortcut.lag
        shareable = (self.shortcut is None and self.a is not None and self.a.stride == 1
                     and 0 < lag <= self.a.keep)
        sums_smaller = TapSums.smaller(self.a, branch.a)
        self.shortcut_from_a = shareable and not (sums_smaller and self._sums_carry_less(block, lag))
        if self.shortcut_from_a:
            self.shortcut_lag = lag
            after_shortcut = after_b
        elif sums_smaller:  # the window's buffer is nobody else's: carry less
            self.a = TapSums(self.a, branch.a)
        (self.delay_shortcut, self.delay_branch), self.timing = aligned(f"{name}.join", [after_shortcut, after_b])

    def _sums_carry_less(self, block: ResBlock, lag: int) -> bool:
        """Whether the first window's partial sums plus the shortcut delayed on its own are fewer
        values than the window's past inputs, which the shortcut would share (counted per input
        position: a strided shortcut's output has fewer)."""
        a, shortcut = self.branch.a, block.branch1
        shared = a.in_channels * self.a.keep
        sums = a.out_channels * (a.kernel_size[0] - 1)
        if shortcut is None:
            return sums + a.in_channels * lag < shared
        return sums + shortcut.out_channels * lag / (shortcut.stride[1] * shortcut.stride[2]) < shared

    def __call__(self, x: torch.Tensor, ctx: StreamContext) -> torch.Tensor:
        block, branch = self.block, self.branch
        if self.shortcut_from_a:
            steps = ctx.steps(self.a.timing_in)
            joined = self.a.joined(x, ctx)
            start = self.a.skip + self.a.keep - self.shortcut_lag
            shortcut = joined[:, :, start:start + steps]
            y = self.a.apply(joined, steps)
        else:
            shortcut = x
            y = run_conv(self.a, branch.a, x, ctx)
        if block.branch1 is not None:
            shortcut = run_conv(self.shortcut, block.branch1, shortcut, ctx)
        if block.branch1_bn is not None:
            shortcut = block.branch1_bn(shortcut)
        y = branch.a_relu(branch.a_bn(y))
        if self.factorized:
            b = branch.b
            if b.spatial_first:
                y = run_conv(self.b, b.conv_t, b.relu(b.bn(b.conv_xy(y))), ctx)
            else:
                y = b.conv_xy(b.relu(b.bn(run_conv(self.b, b.conv_t, y, ctx))))
        else:
            y = run_conv(self.b, branch.b, y, ctx)
        y = branch.c_bn(branch.c(branch.b_relu(branch.b_bn(y))))
        return block.relu(self.delay_shortcut(shortcut, ctx) + self.delay_branch(y, ctx))


class StreamStage:
    """`ResStage`: each pathway's blocks in turn."""

    def __init__(self, name: str, stage: ResStage, timings: Sequence[Timing], form: str):
        if any(n.startswith("pathway") and "_nonlocal" in n for n, _ in stage.named_children()):
            raise StreamrecError(f"{name} has non-local blocks, which attend over the whole clip: no streaming form")
        self.pathways: list[list[StreamBlock]] = []
        self.timings = []
        for p, timing in enumerate(timings):
            blocks = []
            for i in range(stage.num_blocks[p]):
                blocks.append(StreamBlock(f"{name}.pathway{p}_res{i}", getattr(stage, f"pathway{p}_res{i}"), timing,
                                          form))
                timing = blocks[-1].timing
            self.pathways.append(blocks)
            self.timings.append(timing)

    def __call__(self, xs: list[torch.Tensor], ctx: StreamContext) -> list[torch.Tensor]:
        out = []
        for blocks, x in zip(self.pathways, xs):
            for block in blocks:
                x = block(x, ctx)
            out.append(x)
        return out


class StreamFuse:
    """`FuseFastToSlow`: the strided lateral over Fast, joined onto Slow at the same step."""

    def __init__(self, name: str, fuse: FuseFastToSlow, timings: Sequence[Timing], form: str):
        self.fuse = fuse
        self.lateral = conv_window(f"{name}.conv_f2s", fuse.conv_f2s, timings[1], form)
        (self.delay_slow, self.delay_lateral), slow = aligned(name, [timings[0], self.lateral.timing])
        self.timings = [slow, timings[1]]

    def __call__(self, xs: list[torch.Tensor], ctx: StreamContext) -> list[torch.Tensor]:
        slow, fast = xs
        lateral = self.fuse.relu(self.fuse.bn(self.lateral(fast, ctx)))
        return [torch.cat([self.delay_slow(slow, ctx), self.delay_lateral(lateral, ctx)], dim=1), fast]


class RunningMean:
    """The mean of the last ``steps`` steps (the head's temporal average), carried. Taken as an
    average pool over time, the op the clip head pools with: ONNX Runtime's CPU runs a mean over
    this middle axis (ReduceMean) several times slower (BENCHMARKS.md, streaming.py)."""

    def __init__(self, name: str, steps: int, timing: Timing):
        self.name, self.steps, self.timing = name, steps, timing

    def __call__(self, x: torch.Tensor, ctx: StreamContext) -> torch.Tensor:
        x = ctx.after_reset(x, self.timing)
        if self.steps > 1:
            x = torch.cat([ctx.take(self.name, x, self.steps - 1), x], dim=2)
            ctx.put(x[:, :, -(self.steps - 1):])
        return F.avg_pool3d(last_steps(x, self.steps), (self.steps, 1, 1), stride=1)


class StreamHead:
    """`Head`: each pathway pooled over space per step, the pathways brought to the same source
    time, the last clip length of steps averaged, then the clip head's projection and averaging."""

    def __init__(self, head: Head, timings: Sequence[Timing], average_units: int | None = None):
        self.head = head
        pools = [getattr(head, f"pathway{p}_avgpool") for p in range(len(timings))]
        self.spatial = [tuple(pool.kernel_size[1:]) for pool in pools]
        lengths = [pool.kernel_size[0] for pool in pools]
        clip_units = {lengths[p] / t.rate for p, t in enumerate(timings)}
        if len(clip_units) != 1 or not float(next(iter(clip_units))).is_integer():
            raise StreamrecError(f"the head pools {lengths} steps of pathways at {[t.rate for t in timings]} steps "
                                 "per unit, which are not the same whole number of units")
        self.clip_units = int(clip_units.pop())
        self.average_units = self.clip_units if average_units is None else average_units
        if not 1 <= self.average_units <= self.clip_units:
            raise StreamrecError(f"the head can average 1 to {self.clip_units} units (a clip), not {average_units}")
        self.delay_units = max(-(-t.lag // t.rate) for t in timings)  # the slowest pathway, in whole units
        self.delays = [Delay(f"head.pathway{p}_delay", t.rate * self.delay_units - t.lag, t)
                       for p, t in enumerate(timings)]
        self.means = [RunningMean(f"head.pathway{p}_window", t.rate * self.average_units,
                                  Timing(t.rate, t.rate * self.delay_units)) for p, t in enumerate(timings)]

    def __call__(self, xs: list[torch.Tensor], ctx: StreamContext) -> torch.Tensor:
        pooled = []
        for p, x in enumerate(xs):
            x = F.avg_pool3d(x, (1, *self.spatial[p]), stride=1)
            pooled.append(self.means[p](self.delays[p](x, ctx), ctx))
        ctx.record("head", pooled, [m.timing for m in self.means])
        x = torch.cat(pooled, dim=1).permute(0, 2, 3, 4, 1)  # B, 1, h, w, C: classify every position
        return average_positions(self.head.projection(self.head.dropout(x)), self.head.average)

    def every_unit(self, xs: list[torch.Tensor], ctx: StreamContext) -> torch.Tensor:
        """Logits ``[B, windows, K]`` at every unit boundary of this call's steps from a whole clip
        on, each of the running average that ends there (for training on a sequence in one call:
        nothing is carried)."""
        pooled = []
        for p, x in enumerate(xs):
            x = F.avg_pool3d(x, (1, *self.spatial[p]), stride=1)
            x = self.delays[p](x, ctx)
            mean = self.means[p]
            x = ctx.after_reset(x, mean.timing)
            pooled.append(x.unfold(2, mean.steps, mean.timing.rate).mean(dim=-1))  # B, C, windows, h, w
        # a shorter average has windows that end before a whole clip has arrived: the stream's
        # calls answer only from a clip on (warmup_units), so these do not either
        x = torch.cat(pooled, dim=1)[:, :, self.clip_units - self.average_units:].permute(0, 2, 3, 4, 1)
        batch, windows = x.shape[:2]  # B, windows, h, w, C
        logits = self.head.projection(self.head.dropout(x)).flatten(0, 1).unsqueeze(1)  # B * windows, 1, h, w, K
        return average_positions(logits, self.head.average).view(batch, windows, -1)


# --------------------------------------------------------------------------- the networks


class StreamingNetwork(nn.Module):
    """A clip network's streaming form, in the engine contract: ``forward(*frames, state)`` takes
    each pathway's new frames this call, uint8 RGB ``[B, frames_per_call, H, W, 3]`` (``slow`` and
    ``fast``, or ``frames``), and the state float32 ``[B, state_size]``; it returns logits
    ``[B, num_classes]`` and the new state. Normalisation happens inside, as in `UInt8Clips`.

    ``units`` per call fixes the frames per call; the state layout does not depend on it, so
    graphs for several hops share their streams' states.
    """

    def __init__(self, model: UInt8Clips, clip: ClipConfig, *, form: str = DELAYED_EXACT, units: int = 1,
                 average_units: int | None = None):
        super().__init__()
        if form not in FORMS:
            raise StreamrecError(f"streaming form '{form}' is not one of: {', '.join(FORMS)}")
        if average_units is not None and form != CAUSAL:
            raise StreamrecError("average_units shortens the causal form's running average; the delayed-exact form "
                                 "averages a whole clip, as the clip model does")
        if units < 1:
            raise StreamrecError(f"a streaming call takes at least one unit, got {units}")
        self.clips = model  # holds the clip network (`model.network`) and its normalisation
        self.clip, self.form, self.units = clip, form, units
        network = model.network
        self.rates = pathway_rates(network, clip)
        self.stages = self._build(network, [Timing(r) for r in self.rates], form, average_units)
        self.layout = self._discover_layout()

    def _build(self, network: VideoNetwork, timings: list[Timing], form: str,
               average_units: int | None) -> list[tuple[str, object]]:
        """The streamed blocks in the clip network's order (named as its modules); each one's
        output timings feed the next."""
        slowfast = isinstance(network, SlowFast)
        stems: PathwayStems = network.s1
        stem_ops = [StreamStem(f"s1.pathway{p}_stem", getattr(stems, f"pathway{p}_stem"), t, form)
                    for p, t in enumerate(timings)]
        steps: list[tuple[str, object]] = [("s1", stem_ops)]
        timings = [op.timing for op in stem_ops]
        if slowfast:
            steps.append(("s1_fuse", StreamFuse("s1_fuse", network.s1_fuse, timings, form)))
            timings = steps[-1][1].timings
        for index in range(2, 6):
            stage = StreamStage(f"s{index}", getattr(network, f"s{index}"), timings, form)
            if slowfast:  # the fuse before it read the same Fast stream its first Fast block reads
                share_buffer([steps[-1][1].lateral, stage.pathways[1][0].a])
            steps.append((f"s{index}", stage))
            timings = stage.timings
            if slowfast and index < 5:
                fuse = StreamFuse(f"s{index}_fuse", getattr(network, f"s{index}_fuse"), timings, form)
                steps.append((f"s{index}_fuse", fuse))
                timings = fuse.timings
            if not slowfast and index == 2:
                pool = pool_window("pathway0_pool", network.pathway0_pool, timings[0], form)
                if pool is not None:
                    steps.append(("pathway0_pool", pool))
                    timings = [pool.timing]
        self.head = StreamHead(network.head, timings, average_units)
        return steps

    @property
    def delay_units(self) -> int:
        """Units between a step's input and its per-step feature reaching the head (0 when causal)."""
        return self.head.delay_units

    @property
    def clip_units(self) -> int:
        return self.head.clip_units

    @property
    def average_units(self) -> int:
        """Units of per-step features the head averages: a clip's, unless set shorter (causal form)."""
        return self.head.average_units

    @property
    def warmup_units(self) -> int:
        """Units after a reset before the running mean holds one clip length: the first valid logits."""
        return self.delay_units + self.clip_units

    @property
    def unit_frames(self) -> int:
        """Source frames (at the training rate) per unit."""
        return self.clip.sampling_rate * max(self.rates)

    def frames_per_call(self) -> dict[str, int]:
        """Each input's frames in one call."""
        return {name: rate * self.units for name, rate in zip(self.clip.input_names, self.rates)}

    def _run(self, pathways: list[torch.Tensor], ctx: StreamContext, every_unit: bool = False) -> torch.Tensor:
        xs = pathways
        for name, step in self.stages:
            if isinstance(step, list):  # the stems
                xs = [op(x, ctx) for op, x in zip(step, xs)]
            elif isinstance(step, Window):
                xs = [step(xs[0], ctx)]
            else:
                xs = step(xs, ctx)
            if ctx.trace is not None:
                ctx.record(name, xs, self._timings_after(name))
        return self.head.every_unit(xs, ctx) if every_unit else self.head(xs, ctx)

    def _timings_after(self, name: str) -> list[Timing]:
        step = dict(self.stages)[name]
        if isinstance(step, list):
            return [op.timing for op in step]
        if isinstance(step, Window):
            return [step.timing]
        return list(step.timings)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(*frames, state) -> (logits, new_state)``."""
        *frames, state = inputs
        ctx = StreamContext(state, self.layout, self.units, state.shape[0])
        logits = self._run(self._pathways(frames), ctx)
        return logits, ctx.new_state(self.layout.counter_cap)

    def traced(self, frames: Sequence[torch.Tensor], state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """`forward`, and each stage's per-step output this call with its timing (for checking the
        form against the clip model's features)."""
        trace: dict = {}
        ctx = StreamContext(state, self.layout, self.units, state.shape[0], trace)
        logits = self._run(self._pathways(frames), ctx)
        return logits, ctx.new_state(self.layout.counter_cap), trace

    def sequence_logits(self, *frames: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, units - warmup_units + 1, K]`` at the end of every unit from the first
        valid one on, for streams that start with these frames: a whole training sequence in one
        call (``units`` of the network), differentiable, with nothing carried in or out."""
        ctx = StreamContext(None, None, self.units, frames[0].shape[0], device=frames[0].device)
        logits = self._run(self._pathways(frames), ctx, every_unit=True)
        return logits[:, self.delay_units:]  # windows that still hold steps from before the start

    def _pathways(self, frames: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        wanted = self.frames_per_call()
        for name, x in zip(self.clip.input_names, frames):
            if x.shape[1] != wanted[name]:
                raise StreamrecError(f"streaming input '{name}' takes {wanted[name]} frames a call "
                                     f"({self.units} units), got {x.shape[1]}")
        return [self.clips._normalise(x) for x in frames]

    def zero_state(self, batch: int = 1) -> torch.Tensor:
        """The state of ``batch`` fresh streams."""
        return torch.zeros(batch, self.layout.size)

    def _discover_layout(self) -> StateLayout:
        size = self.clip.crop_size
        frames = [torch.zeros(1, n, size, size, 3, dtype=torch.uint8) for n in self.frames_per_call().values()]
        ctx = StreamContext(None, None, self.units, 1)
        with torch.no_grad():
            self._run(self._pathways(frames), ctx)
        entries, offset = [], 1
        for name, shape in ctx.found:
            entries.append(StateEntry(name, shape, offset))
            offset += math.prod(shape)
        # past this count every new step comes after the reset, and every mask is all ones
        return StateLayout(tuple(entries), counter_cap=self.warmup_units)


def pathway_rates(network: nn.Module, clip: ClipConfig) -> list[int]:
    """Each pathway's input frames per unit (SlowFast: Slow 1, Fast ``alpha``; a single pathway:
    its frames per final-stage step), or a clear error for a network without a streaming form."""
    if not isinstance(network, (SlowFast, ResNet3D)):
        raise no_streaming_form(network)
    if not hasattr(network.head, "pathway0_avgpool"):
        raise StreamrecError(f"model '{type(network).__name__}' classifies each person's box (an RoI head): "
                             "the per-person mode has no streaming form")
    if isinstance(network, SlowFast):
        return [1, clip.alpha]
    final = network.head.pathway0_avgpool.kernel_size[0]
    if clip.num_frames % final:
        raise StreamrecError(f"{clip.num_frames} frames do not stride evenly down to the head's {final}")
    return [clip.num_frames // final]


def no_streaming_form(network: nn.Module) -> StreamrecError:
    reasons = {
        "X3D": "its squeeze-excitation gates every block by the whole clip's average",
        "MViT": "its attention spans the whole clip",
        "S3D": "its max-pools pad time with -inf and its head averages windows of the clip",
        "R2Plus1D": "torchvision's R(2+1)D blocks are not the bottleneck ResNet's (use arch resnet3d's r2plus1d_r50)",
    }
    kind = type(network).__name__
    why = reasons.get(kind, "only SlowFast and the bottleneck ResNet (resnet3d) are built over carried state")
    return StreamrecError(f"model '{kind}' has no streaming form: {why}")


def streaming_network(model: UInt8Clips, clip: ClipConfig, *, form: str = DELAYED_EXACT, units: int = 1,
                      average_units: int | None = None) -> StreamingNetwork:
    """The streaming form of a loaded clip model (`streamrec.checkpoints.load_model`), sharing its parameters."""
    return StreamingNetwork(model, clip, form=form, units=units, average_units=average_units).eval()


def units_for_hop(network: StreamingNetwork, hop_frames: int) -> int:
    """Units per call for a hop in source frames at the training rate, or a clear error."""
    return units_in_hop(network.clips, network.clip, hop_frames)


def units_in_hop(model: UInt8Clips, clip: ClipConfig, hop_frames: int) -> int:
    """`units_for_hop` for a loaded clip model, without building its streaming form."""
    unit = clip.sampling_rate * max(pathway_rates(model.network, clip))
    if hop_frames < unit or hop_frames % unit:
        raise StreamrecError(f"a streaming {type(model.network).__name__} advances {unit} source frames "
                             f"(one unit) at a time; use a hop that is a multiple of {unit}, not {hop_frames}")
    return hop_frames // unit


def streaming_network_for_hop(model: UInt8Clips, clip: ClipConfig, hop_frames: int, *, form: str = DELAYED_EXACT,
                              average_units: int | None = None) -> StreamingNetwork:
    """`streaming_network` whose calls take a hop of ``hop_frames`` source frames at the training
    rate (a whole number of units, or a clear error)."""
    return streaming_network(model, clip, form=form, units=units_in_hop(model, clip, hop_frames),
                             average_units=average_units)
