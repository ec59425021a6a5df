"""Procedural action data: a drawn stick figure performing actions that only motion tells apart.

Nothing can be downloaded here, so the demo model learns from rendered clips. The figure is
seen in profile and drawn mirror-symmetric (straight legs, no face), so a single frame of
walking left looks like one of walking right; sitting down and getting up from a seat pass
through the same poses in opposite directions. Everything that should not matter is random:
position, scale, speed, colours, background texture, camera noise, blur, frame rate (15-30
fps). Everything is a pure function of a seed, and any frame renders on its own, so training
renders only the frames a clip samples.

- A *script* is a timeline of motion pieces (idle, walk, fall, get up, ...); each piece maps
  its local time to a pose, and the labelled pieces are the ground-truth segments.
- A *scene* is a script plus an appearance and a frame rate; ``scene.frame(i)`` is frame i.
- The background class ``standing still`` is every moment that is none of the six actions:
  idling, resting on the floor or on a seat after a fall or a sit, getting up again.

``python -m streamrec.procedural --help`` writes clip folders (the layout ``train`` reads)
and surveillance videos with ground truth.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from streamrec.config import runtime_dir
from streamrec.errors import StreamrecError
from streamrec.evaluation import Segment, ground_truth_path, write_ground_truth

BACKGROUND = "standing still"
ACTIONS = ("walking left", "walking right", "jumping", "waving", "falling down", "sitting down")
LABELS = (BACKGROUND, *ACTIONS)  # the order of streamrec/labels/actions.txt

GENERATOR_VERSION = 2  # bump when the same seed would render differently: it names cached demo videos
FRAME_SIZE = (160, 120)  # width, height: about the model's resolution; the pipeline resizes anyway
FPS_RANGE = (15, 30)  # integer rates, which MP4 stores exactly
STAGE_FRACTION = 0.84  # the figure stays in the central square of this share of the height, inside any centre crop
SCALE_RANGE = (14.0, 19.0)  # pixels per body unit: the figure is 40-55% of the frame's height
MIN_WALK_ROOM = 2.4  # body units: 1.5 s at the fastest walking speed
BLEND_S = 0.2  # a piece eases in from the previous piece's last pose over this long

# Body lengths in torso units.
THIGH = SHIN = 0.6
LEG = THIGH + SHIN
TORSO, NECK, HEAD_RADIUS = 1.0, 0.3, 0.27
UPPER_ARM, FOREARM = 0.5, 0.45
FIGURE_HEIGHT = LEG + TORSO + NECK + 2 * HEAD_RADIUS
LYING_HIP_HEIGHT = 0.12

# A pose is a vector: hip position (world units, y up), whole-body tilt and torso lean
# (radians, counter-clockwise), and limb angles relative to their parent, 0 = hanging down.
POSE_SIZE = 12
X, Y, TILT, LEAN, FAR_SHOULDER, FAR_ELBOW, NEAR_SHOULDER, NEAR_ELBOW, FAR_HIP, FAR_KNEE, NEAR_HIP, NEAR_KNEE = range(12)


def smoothstep(u: float) -> float:
    u = min(max(u, 0.0), 1.0)
    return u * u * (3.0 - 2.0 * u)


def _down(angle: float) -> np.ndarray:
    """The unit vector pointing down, rotated counter-clockwise by ``angle``."""
    return np.array([math.sin(angle), -math.cos(angle)])


# --------------------------------------------------------------------------- scripts


@dataclass(frozen=True)
class Piece:
    start: float
    duration: float
    pose: Callable[[float], np.ndarray]  # local seconds -> pose vector
    label: str = BACKGROUND

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True)
class Script:
    pieces: tuple[Piece, ...]

    @property
    def duration(self) -> float:
        return self.pieces[-1].end

    @property
    def segments(self) -> list[Segment]:
        """Ground truth: the labelled pieces (background is implicit)."""
        return [Segment(p.start, p.end, p.label) for p in self.pieces if p.label != BACKGROUND]

    def _index(self, t: float) -> int:
        """The piece under way at ``t`` (the first before the script, the last after it)."""
        starts = [p.start for p in self.pieces]
        return max(0, min(int(np.searchsorted(starts, t, side="right")) - 1, len(self.pieces) - 1))

    def piece_at(self, t: float) -> Piece:
        return self.pieces[self._index(t)]

    def pose(self, t: float) -> np.ndarray:
        index = self._index(t)
        piece = self.pieces[index]
        local = min(max(t - piece.start, 0.0), piece.duration)
        pose = piece.pose(local)
        if index > 0 and local < BLEND_S:
            previous = self.pieces[index - 1]
            before = previous.pose(previous.duration)
            pose = before + (pose - before) * smoothstep(local / BLEND_S)
        return pose


@dataclass(frozen=True)
class Style:
    """How this person holds themselves: random per scene, independent of the action."""

    shoulders: tuple[float, float]  # resting arm angles (far, near)
    elbows: tuple[float, float]
    stance: float  # legs apart when standing
    lean: float
    arm_swing: float  # walking
    sway: float  # idle


class Choreographer:
    """Builds a script piece by piece, keeping the figure continuous and on stage."""

    def __init__(self, rng: np.random.Generator, stage_width: float):
        self.rng = rng
        self.x_min, self.x_max = 0.7, stage_width - 0.7  # hip positions that keep arms on stage
        self.x = float(rng.uniform(self.x_min, self.x_max))
        self.facing = float(rng.choice([-1.0, 1.0]))
        self.posture = "standing"  # standing | lying | sitting
        self.lying_direction = 1.0  # which way the body points when lying (sign of TILT)
        e = rng.uniform(-0.35, 0.35)
        self.style = Style(
            shoulders=(float(rng.uniform(-0.25, 0.25)), float(rng.uniform(-0.25, 0.25))),
            elbows=(float(e + rng.uniform(-0.1, 0.1)), float(e + rng.uniform(-0.1, 0.1))),
            stance=float(rng.uniform(0.0, 0.14)),
            lean=float(rng.uniform(-0.08, 0.08)),
            arm_swing=float(rng.uniform(0.2, 0.6)),
            sway=float(rng.uniform(0.01, 0.05)),
        )
        self.pieces: list[Piece] = []
        self.time = 0.0

    def script(self) -> Script:
        return Script(tuple(self.pieces))

    def _add(self, duration: float, pose: Callable[[float], np.ndarray], label: str = BACKGROUND) -> None:
        self.pieces.append(Piece(self.time, duration, pose, label))
        self.time += duration

    def _standing(self, x: float) -> np.ndarray:
        s = self.style
        pose = np.zeros(POSE_SIZE)
        pose[X], pose[Y], pose[LEAN] = x, LEG * math.cos(s.stance), s.lean
        pose[FAR_SHOULDER], pose[NEAR_SHOULDER] = s.shoulders
        pose[FAR_ELBOW], pose[NEAR_ELBOW] = s.elbows
        pose[FAR_HIP], pose[NEAR_HIP] = -s.stance, s.stance
        return pose

    # ---------------------------------------------------------------- action by name

    def perform(self, label: str) -> None:
        """The action ``label``, getting up first if the figure is down."""
        self.stand_up_if_down()
        {
            "walking left": lambda: self.walk(-1.0),
            "walking right": lambda: self.walk(1.0),
            "jumping": self.jump,
            "waving": self.wave,
            "falling down": self.fall,
            "sitting down": self.sit_down,
        }[label]()

    def stand_up_if_down(self) -> None:
        if self.posture != "standing":
            self.rest(self.rng.uniform(0.6, 2.0))
            self.get_up()

    def get_up(self) -> None:
        if self.posture == "lying":
            self.get_up_from_floor()
        elif self.posture == "sitting":
            self.stand_up_from_seat()

    def room(self, direction: float) -> float:
        return self.x_max - self.x if direction > 0 else self.x - self.x_min

    def act_randomly(self, until: float) -> None:
        """Actions in random order (each as often as the others) after idle gaps, the last starting
        before the script reaches ``until``; walks go the way there is room for."""
        rng = self.rng
        order: list[str] = []
        while self.time < until:
            if not order:
                order = list(rng.permutation(ACTIONS))
            label = order.pop()
            self.stand_up_if_down()
            self.idle(rng.uniform(1.5, 5.0))
            if label.startswith("walking"):  # walk the way there is room for at least a second and a half
                direction = -1.0 if label == "walking left" else 1.0
                if self.room(direction) < min(MIN_WALK_ROOM, self.room(-direction)):
                    label = "walking right" if label == "walking left" else "walking left"
            self.perform(label)

    # ---------------------------------------------------------------- background pieces

    def idle(self, duration: float) -> None:
        """Standing, breathing; the arms sometimes hold a still pose that waving or jumping also passes through."""
        rng, base = self.rng, self._standing(self.x)
        variant = rng.choice(["rest", "arm raised", "arms forward"], p=[0.6, 0.25, 0.15])
        if variant == "arm raised":
            arm = rng.choice([FAR_SHOULDER, NEAR_SHOULDER])
            base[arm] = rng.choice([-1.0, 1.0]) * rng.uniform(1.8, 2.5)
            base[arm + 1] = rng.uniform(-0.5, 0.5)
        elif variant == "arms forward":
            base[[FAR_SHOULDER, NEAR_SHOULDER]] = self.facing * rng.uniform(0.9, 1.5)
        phase, sway = rng.uniform(0, 2 * math.pi), self.style.sway

        def pose(t: float) -> np.ndarray:
            p = base.copy()
            p[LEAN] += sway * math.sin(2 * math.pi * 0.25 * t + phase)
            p[[FAR_SHOULDER, NEAR_SHOULDER]] += 0.5 * sway * math.sin(2 * math.pi * 0.2 * t + 2 * phase)
            return p

        self._add(duration, pose)

    def rest(self, duration: float) -> None:
        """Lying or sitting still after a fall or a sit (or standing idle)."""
        if self.posture == "standing":
            self.idle(duration)
            return
        final = self.pieces[-1].pose(self.pieces[-1].duration) if self.pieces else self._down_pose()
        phase = self.rng.uniform(0, 2 * math.pi)

        def pose(t: float) -> np.ndarray:
            p = final.copy()
            p[LEAN] += 0.02 * math.sin(2 * math.pi * 0.3 * t + phase)
            return p

        self._add(duration, pose)

    def _down_pose(self) -> np.ndarray:
        """The resting pose of a figure that starts a scene on the floor or on a seat."""
        if self.posture == "lying":
            p = self._standing(self.x)
            p[TILT], p[Y] = self.lying_direction * math.pi / 2, LYING_HIP_HEIGHT
            return p
        return self._sitting_pose(self.x + self.facing * THIGH, 1.0, 0.0)

    def get_up_from_floor(self) -> None:
        """The slow reverse of a fall, pushing up with the arms."""
        rng, direction = self.rng, self.lying_direction
        duration = rng.uniform(1.3, 2.2)
        feet = self.x + direction * LEG  # the hip lies LEG from the feet, toward the head's side reversed
        start = self.pieces[-1].pose(self.pieces[-1].duration) if self.pieces else self._down_pose()

        def pose(t: float) -> np.ndarray:
            u = smoothstep(t / duration)
            p = self._standing(feet)
            tilt = direction * math.pi / 2 * (1 - u)
            p[TILT] = tilt
            p[X] = feet - LEG * math.sin(tilt)
            p[Y] = max(LEG * math.cos(tilt), LYING_HIP_HEIGHT)
            push = math.sin(math.pi * u)
            p[[FAR_SHOULDER, NEAR_SHOULDER]] = -direction * 1.2 * push + start[[FAR_SHOULDER, NEAR_SHOULDER]] * (1 - u)
            p[[FAR_KNEE, NEAR_KNEE]] = direction * 0.5 * push
            return p

        self._add(duration, pose)
        self.x, self.posture = feet, "standing"

    def stand_up_from_seat(self) -> None:
        """Sitting down in reverse, with its own timing."""
        duration = self.rng.uniform(1.0, 1.8)
        feet = self.x + self.facing * THIGH

        def pose(t: float) -> np.ndarray:
            return self._sitting_pose(feet, 1.0 - smoothstep(t / duration), 0.6)

        self._add(duration, pose)
        self.x, self.posture = feet, "standing"

    # ---------------------------------------------------------------- actions

    def walk(self, direction: float, distance: float | None = None) -> None:
        """Straight legs with planted feet: the stance leg pivots over its foot while the swing leg mirrors it.

        A few seconds as far as the stage allows, or exactly ``distance`` body units (walking
        onto or off the stage), however long that takes.
        """
        rng = self.rng
        speed, amplitude = rng.uniform(0.8, 1.6), rng.uniform(0.28, 0.42)
        if distance is None:
            duration = min(rng.uniform(1.8, 3.2), self.room(direction) / speed)
        else:
            duration = distance / speed
        step = 2 * LEG * math.sin(amplitude)
        x0, swing = self.x, self.style.arm_swing

        def pose(t: float) -> np.ndarray:
            p = self._standing(x0 + direction * speed * t)
            travelled = speed * t / step
            u = travelled - math.floor(travelled)  # progress through the current step
            stance = math.asin(-direction * step * (u - 0.5) / LEG)
            far_is_stance = int(math.floor(travelled)) % 2 == 0
            p[FAR_HIP], p[NEAR_HIP] = (stance, -stance) if far_is_stance else (-stance, stance)
            p[Y] = LEG * math.cos(stance)
            p[FAR_SHOULDER] = self.style.shoulders[0] + swing * p[NEAR_HIP] / amplitude
            p[NEAR_SHOULDER] = self.style.shoulders[1] + swing * p[FAR_HIP] / amplitude
            return p

        self._add(duration, pose, "walking left" if direction < 0 else "walking right")
        self.x += direction * speed * duration
        self.facing = direction

    def jump(self) -> None:
        """Two to four jumps: crouch, push off, fly with the arms up, land in a crouch."""
        rng = self.rng
        count, period, height = int(rng.integers(2, 5)), rng.uniform(0.6, 0.9), rng.uniform(0.3, 0.7)
        arms_up = rng.uniform(1.8, 2.8)
        x, facing = self.x, self.facing

        def pose(t: float) -> np.ndarray:
            u = (t / period) % 1.0
            if u < 0.2:
                bend, lift, flight = smoothstep(u / 0.2), 0.0, 0.0
            elif u < 0.3:
                bend, lift, flight = 1.0 - smoothstep((u - 0.2) / 0.1), 0.0, 0.0
            elif u < 0.75:
                s = (u - 0.3) / 0.45
                bend, lift, flight = 0.0, 4 * height * s * (1 - s), math.sin(math.pi * s)
            elif u < 0.88:
                bend, lift, flight = 0.7 * smoothstep((u - 0.75) / 0.13), 0.0, 0.0
            else:
                bend, lift, flight = 0.7 * (1.0 - smoothstep((u - 0.88) / 0.12)), 0.0, 0.0
            p = self._standing(x)
            p[FAR_HIP] = p[NEAR_HIP] = facing * 0.7 * bend
            p[FAR_KNEE] = p[NEAR_KNEE] = -facing * 1.4 * bend
            p[Y] = LEG * math.cos(0.7 * bend) + lift
            p[LEAN] = -facing * 0.35 * bend
            p[[FAR_SHOULDER, NEAR_SHOULDER]] = -facing * 0.7 * bend + facing * arms_up * flight
            return p

        self._add(count * period, pose, "jumping")

    def wave(self) -> None:
        """Raise an arm (sometimes both), swing the forearm, lower it."""
        rng = self.rng
        duration, frequency = rng.uniform(1.6, 3.4), rng.uniform(1.5, 3.0)
        amplitude, raised = rng.uniform(0.45, 0.8), rng.choice([-1.0, 1.0]) * rng.uniform(1.8, 2.4)
        arms = [FAR_SHOULDER, NEAR_SHOULDER] if rng.random() < 0.25 else [rng.choice([FAR_SHOULDER, NEAR_SHOULDER])]
        x, phase, ramp = self.x, rng.uniform(0, 2 * math.pi), 0.35

        def pose(t: float) -> np.ndarray:
            p = self._standing(x)
            up = smoothstep(t / ramp) * smoothstep((duration - t) / ramp)
            for arm in arms:
                p[arm] += (raised - p[arm]) * up
                p[arm + 1] += (0.3 * np.sign(raised) + amplitude * math.sin(2 * math.pi * frequency * t + phase)
                               - p[arm + 1]) * up
            return p

        self._add(duration, pose, "waving")

    def fall(self) -> None:
        """Topple sideways like a plank, accelerating, and settle on the floor.

        The segment includes the short settle after impact: the motion people call a fall.
        """
        rng = self.rng
        # Positive tilt topples toward -x; fall where there is room for the body.
        direction = 1.0 if self.room(-1.0) > self.room(1.0) else -1.0
        if min(self.room(-1.0), self.room(1.0)) > FIGURE_HEIGHT:
            direction = float(rng.choice([-1.0, 1.0]))
        drop, settle = rng.uniform(0.45, 0.85), rng.uniform(0.25, 0.45)
        feet = self.x
        arm_signs = rng.choice([-1.0, 1.0], size=2)

        def pose(t: float) -> np.ndarray:
            p = self._standing(feet)
            u = min(t / drop, 1.0)
            tilt = direction * math.pi / 2 * u * u
            bounce = 0.0 if t < drop else 0.08 * math.sin(math.pi * (t - drop) / settle)
            p[TILT] = tilt - direction * bounce
            p[X] = feet - LEG * math.sin(p[TILT])
            p[Y] = max(LEG * math.cos(p[TILT]), LYING_HIP_HEIGHT)
            reach = math.sin(math.pi * u) if t < drop else 0.0
            p[[FAR_SHOULDER, NEAR_SHOULDER]] += arm_signs * 1.8 * reach
            p[[FAR_KNEE, NEAR_KNEE]] = direction * 0.3 * reach
            return p

        self._add(drop + settle, pose, "falling down")
        self.x, self.posture, self.lying_direction = feet - direction * LEG, "lying", direction

    def sit_down(self) -> None:
        """Lower the hips onto an (invisible) seat, leaning forward with the arms out for balance."""
        rng = self.rng
        facing = float(rng.choice([-1.0, 1.0]))
        duration = rng.uniform(0.9, 1.8)
        feet = self.x

        def pose(t: float) -> np.ndarray:
            return self._sitting_pose(feet, smoothstep(t / duration), 0.45, facing)

        self.facing = facing
        self._add(duration, pose, "sitting down")
        self.x, self.posture = feet - facing * THIGH, "sitting"

    def _sitting_pose(self, feet: float, down: float, lean: float, facing: float | None = None) -> np.ndarray:
        """``down`` from 0 (standing) to 1 (seated); the feet stay put, the knees go forward."""
        facing = self.facing if facing is None else facing
        p = self._standing(feet)
        thigh = facing * math.pi / 2 * down
        p[FAR_HIP] = p[NEAR_HIP] = thigh
        p[FAR_KNEE] = p[NEAR_KNEE] = -thigh
        p[X] = feet - THIGH * math.sin(thigh)
        p[Y] = THIGH * math.cos(thigh) + SHIN
        p[LEAN] = self.style.lean - facing * (lean * math.sin(math.pi * down) + 0.1 * down)
        p[[FAR_SHOULDER, NEAR_SHOULDER]] += facing * 0.9 * math.sin(math.pi * down)
        return p


# --------------------------------------------------------------------------- appearance and rendering


@dataclass(frozen=True)
class Appearance:
    background: np.ndarray  # uint8 RGB [H, W, 3]
    origin: tuple[float, float]  # pixel position of world (0, 0): stage left edge, on the ground
    scale: float  # pixels per body unit
    colours: dict[str, tuple[int, int, int]]  # skin, shirt, trousers
    limb_px: int
    torso_px: int
    noise_sigma: float
    blur_sigma: float


def uniform_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean uniform noise of standard deviation ``sigma``: a third of the cost of Gaussian noise."""
    raw = np.frombuffer(rng.bytes(math.prod(shape)), np.uint8).reshape(shape)
    return (raw.astype(np.float32) - 127.5) * np.float32(2 * math.sqrt(3) * sigma / 255)


def random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3)


def room_background(rng: np.random.Generator, width: int, height: int, horizon: int, wall: np.ndarray,
                    floor: np.ndarray, clutter: float) -> np.ndarray:
    """A wall and a floor; with ``clutter``, lighting gradients, blotches, stripes or tiles, furniture-like boxes."""
    image = np.empty((height, width, 3), np.float32)
    image[:horizon] = wall
    image[horizon:] = floor
    xs = np.linspace(-1, 1, width, dtype=np.float32)[None, :, None]
    image *= 1 + clutter * rng.uniform(-0.25, 0.25) * xs
    blotches = rng.normal(size=(6, 8, 3)).astype(np.float32)
    image += cv2.resize(blotches, (width, height), interpolation=cv2.INTER_CUBIC) * clutter * rng.uniform(5, 25)
    if rng.random() < 0.35 * clutter:  # wall stripes
        period = rng.uniform(6, 20)
        stripes = (np.sin(2 * np.pi * np.arange(width) / period) > 0).astype(np.float32)
        image[:horizon] += (stripes[None, :, None] * rng.uniform(-40, 40, 3)).astype(np.float32)
    if rng.random() < 0.35 * clutter:  # floor tiles
        period = int(rng.integers(6, 16))
        yy, xx = np.mgrid[horizon:height, 0:width]
        checker = ((yy // period + xx // period) % 2).astype(np.float32)
        image[horizon:] += checker[..., None] * rng.uniform(-35, 35, 3).astype(np.float32)
    for _ in range(int(rng.integers(0, 1 + round(3 * clutter)))):  # windows, cupboards, posters
        x0, y0 = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
        w, h = int(rng.integers(6, width // 3)), int(rng.integers(6, height // 2))
        cv2.rectangle(image, (x0, y0), (x0 + w, y0 + h), random_colour(rng).tolist(), -1)
    image += uniform_noise(rng, image.shape, clutter * rng.uniform(0, 10))  # static texture
    return np.clip(image, 0, 255).astype(np.uint8)


def random_figure_colours(rng: np.random.Generator, wall: np.ndarray, floor: np.ndarray,
                          difficulty: float) -> dict[str, tuple[int, int, int]]:
    """Skin, shirt and trousers, each kept apart from the wall and the floor (less so as ``difficulty`` rises)."""
    contrast = 120 + 200 * (1 - difficulty)  # L1 distance in RGB to both wall and floor
    colours = {}
    for part in ("skin", "shirt", "trousers"):
        for _ in range(100):
            colour = random_colour(rng)
            if min(np.abs(colour - wall).sum(), np.abs(colour - floor).sum()) > contrast:
                break
        colours[part] = tuple(int(c) for c in colour)
    return colours


def random_line_widths(rng: np.random.Generator, scale: float) -> tuple[int, int]:
    """Limb and torso line widths in pixels for a figure drawn at ``scale`` pixels per body unit."""
    return max(2, round(scale * rng.uniform(0.16, 0.22))), max(3, round(scale * rng.uniform(0.28, 0.38)))


def random_appearance(rng: np.random.Generator, size: tuple[int, int] = FRAME_SIZE,
                      difficulty: float = 1.0) -> tuple[Appearance, float]:
    """An appearance, and the stage width in body units for the choreographer.

    ``difficulty`` (0..1) scales clutter, camera noise and blur, and lowers the contrast the
    figure is guaranteed against the wall and floor: training ramps it up (a curriculum),
    everything else uses 1.
    """
    width, height = size
    stage = STAGE_FRACTION * height
    left, top = (width - stage) / 2, (height - stage) / 2
    ground = top + stage - rng.uniform(2, 10)
    scale = rng.uniform(*SCALE_RANGE)
    horizon = int(np.clip(ground - rng.uniform(4, 45), 1, height - 2))
    wall, floor = random_colour(rng), random_colour(rng)
    background = room_background(rng, width, height, horizon, wall, floor, difficulty)
    colours = random_figure_colours(rng, wall, floor, difficulty)
    limb_px, torso_px = random_line_widths(rng, scale)
    appearance = Appearance(
        background=background,
        origin=(left, ground),
        scale=scale,
        colours=colours,
        limb_px=limb_px,
        torso_px=torso_px,
        noise_sigma=float(difficulty * rng.uniform(0, 7)),
        blur_sigma=float(difficulty * rng.uniform(0, 1.0)),
    )
    return appearance, stage / scale


SUBPIXEL_BITS = 4  # cv2 draws at 1/16 pixel, so slow motion moves smoothly
EDGE_PX = 0.7  # cv2's antialiased lines and discs are half covered this far beyond their nominal outline


@dataclass(frozen=True)
class Stroke:
    """One line of a drawn figure, in cv2's fixed-point pixels (1/16 px, cv2's pixel centres at integers)."""

    start: tuple[int, int]
    end: tuple[int, int]
    colour: tuple[int, int, int]
    width: int


@dataclass(frozen=True)
class FigureDrawing:
    """Everything `draw_figure` draws for one pose, in drawing order: strokes, then the head on top."""

    strokes: tuple[Stroke, ...]
    head_centre: tuple[int, int]  # 1/16 px
    head_radius: int  # 1/16 px
    head_colour: tuple[int, int, int]

    def box(self) -> np.ndarray:
        """Where the drawing's pixels are: float64 ``[x1, y1, x2, y2]`` with pixel ``j`` spanning
        ``[j, j + 1)`` (the convention of `streamrec.detection.boxes`), from the joints and line widths."""
        ends = [(point, stroke.width / 2) for stroke in self.strokes for point in (stroke.start, stroke.end)]
        ends.append((self.head_centre, self.head_radius / 16))
        points = np.array([point for point, _ in ends], np.float64) / 16 + 0.5
        reach = np.array([r for _, r in ends], np.float64)[:, None] + EDGE_PX
        return np.concatenate([(points - reach).min(axis=0), (points + reach).max(axis=0)])

    def draw(self, image: np.ndarray, colour: tuple[int, ...] | None = None) -> None:
        """Onto ``image`` in the figure's colours, or all in ``colour`` (a mask of the figure)."""
        for stroke in self.strokes:
            cv2.line(image, stroke.start, stroke.end, colour or stroke.colour, stroke.width, cv2.LINE_AA,
                     SUBPIXEL_BITS)
        cv2.circle(image, self.head_centre, self.head_radius, colour or self.head_colour, -1, cv2.LINE_AA,
                   SUBPIXEL_BITS)


def figure_drawing(pose: np.ndarray, look: Appearance) -> FigureDrawing:
    """The pose's joints placed in the frame: the one geometry behind both `draw_figure` and figure boxes."""
    ox, oy = look.origin

    def px(point: np.ndarray) -> tuple[int, int]:
        return round(float(ox + point[0] * look.scale) * 16), round(float(oy - point[1] * look.scale) * 16)

    hip = pose[[X, Y]]
    axis = pose[TILT] + pose[LEAN]
    neck = hip - TORSO * _down(axis)
    head = neck - (NECK + HEAD_RADIUS) * _down(axis)
    shade = {k: tuple(int(0.7 * c) for c in v) for k, v in look.colours.items()}  # far limbs are darker
    strokes: list[Stroke] = []

    def line(a: np.ndarray, b: np.ndarray, colour, width: int) -> None:
        strokes.append(Stroke(px(a), px(b), colour, width))

    def arm(shoulder: int, colour) -> None:
        elbow = neck + UPPER_ARM * _down(axis + pose[shoulder])
        hand = elbow + FOREARM * _down(axis + pose[shoulder] + pose[shoulder + 1])
        line(neck, elbow, colour, look.limb_px)
        line(elbow, hand, colour, look.limb_px)

    def leg(hip_joint: int, colour) -> None:
        knee = hip + THIGH * _down(pose[TILT] + pose[hip_joint])
        foot = knee + SHIN * _down(pose[TILT] + pose[hip_joint] + pose[hip_joint + 1])
        line(hip, knee, colour, look.limb_px)
        line(knee, foot, colour, look.limb_px)

    arm(FAR_SHOULDER, shade["shirt"])
    leg(FAR_HIP, shade["trousers"])
    line(hip, neck, look.colours["shirt"], look.torso_px)
    leg(NEAR_HIP, look.colours["trousers"])
    arm(NEAR_SHOULDER, look.colours["shirt"])
    return FigureDrawing(tuple(strokes), px(head), round(HEAD_RADIUS * look.scale * 16), look.colours["skin"])


def draw_figure(image: np.ndarray, pose: np.ndarray, look: Appearance) -> None:
    figure_drawing(pose, look).draw(image)


def camera(image: np.ndarray, blur_sigma: float, noise_sigma: float, noise_rng: np.random.Generator) -> np.ndarray:
    """The camera's blur, then its noise (drawn from ``noise_rng``), over a rendered frame."""
    if blur_sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), blur_sigma)
    if noise_sigma > 0.5:
        image = cv2.add(image, uniform_noise(noise_rng, image.shape, noise_sigma), dtype=cv2.CV_8U)
    return image


@dataclass(frozen=True)
class Scene:
    seed: int
    fps: int
    script: Script
    look: Appearance

    @property
    def num_frames(self) -> int:
        return int(self.script.duration * self.fps)

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    @property
    def times(self) -> np.ndarray:
        """Frame timestamps in seconds, as a video file reports them."""
        return np.arange(self.num_frames) / self.fps

    @property
    def segments(self) -> list[Segment]:
        return [s for s in self.script.segments if s.start < self.duration]

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` (uint8 RGB), the same every time: camera noise is seeded by the index."""
        image = self.look.background.copy()
        draw_figure(image, self.script.pose(index / self.fps), self.look)
        return camera(image, self.look.blur_sigma, self.look.noise_sigma, np.random.default_rng([self.seed, index]))

    def frames(self) -> Iterator[np.ndarray]:
        return (self.frame(i) for i in range(self.num_frames))


def _new_scene(seed: int, build: Callable[[Choreographer], None], difficulty: float = 1.0) -> Scene:
    rng = np.random.default_rng(seed)
    look, stage_width = random_appearance(rng, difficulty=difficulty)
    fps = int(rng.integers(FPS_RANGE[0], FPS_RANGE[1] + 1))
    choreographer = Choreographer(rng, stage_width)
    build(choreographer)
    return Scene(seed, fps, choreographer.script(), look)


# --------------------------------------------------------------------------- scenes


def action_scene(seed: int, label: str, difficulty: float = 1.0) -> Scene:
    """A few seconds around one action: idle before, then the action, then idle or rest (and maybe getting up).

    For ``standing still`` the scene is idle, or getting up from the floor or a seat: the
    background class must cover every motion of a stream that is not one of the actions.
    """
    if label not in LABELS:
        raise StreamrecError(f"unknown procedural label '{label}'; one of: {', '.join(LABELS)}")

    def build(c: Choreographer) -> None:
        rng = c.rng
        if label == BACKGROUND:  # getting up mirrors sitting and falling, so it is most of the background
            start = rng.choice(["standing", "lying", "sitting"], p=[0.3, 0.35, 0.35])
            if start != "standing":
                c.posture, c.lying_direction = start, float(rng.choice([-1.0, 1.0]))
                c.x = float(np.clip(c.x, c.x_min + LEG, c.x_max - LEG))  # room for the body either way
                c.rest(rng.uniform(0.8, 1.5))
                c.get_up()
                c.idle(rng.uniform(0.8, 2.5))
            else:
                c.idle(rng.uniform(1.5, 3.0))
            return
        if label.startswith("walking"):  # start where the walk has room
            c.x = c.x_min + rng.uniform(0, 0.25) * (c.x_max - c.x_min)
            if label == "walking left":
                c.x = c.x_max + c.x_min - c.x
        c.idle(rng.uniform(1.2, 2.0))  # a full clip of context before the action starts
        c.perform(label)
        c.rest(rng.uniform(0.4, 2.0))
        if c.posture != "standing" and rng.random() < 0.7:
            c.get_up()
            c.idle(rng.uniform(0.3, 1.0))

    return _new_scene(seed, build, difficulty)


def surveillance_scene(seed: int, duration_s: float) -> Scene:
    """Minutes of actions in random order (each action as often as the others) with idle gaps."""

    def build(c: Choreographer) -> None:
        c.act_randomly(until=duration_s - 6.0)
        c.rest(c.rng.uniform(1.5, 3.0))

    return _new_scene(seed, build)


def scripted_scene(seed: int, labels: list[str]) -> Scene:
    """The given actions in order, with idle gaps (the demo video)."""

    def build(c: Choreographer) -> None:
        c.x = (c.x_min + c.x_max) / 2
        for label in labels:
            c.stand_up_if_down()
            c.idle(c.rng.uniform(1.5, 3.0))
            c.perform(label)
        c.rest(2.0)

    return _new_scene(seed, build)


# --------------------------------------------------------------------------- files


def write_video(scene: Scene, path: str | Path) -> Path:
    """An MP4 of the scene and, next to it, its ground truth (``.json``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = FRAME_SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), scene.fps, (width, height))
    if not writer.isOpened():
        raise StreamrecError(f"cannot write video {path}; check the folder is writable")
    try:
        for frame in scene.frames():
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    write_ground_truth(ground_truth_path(path), scene.segments, seed=scene.seed, fps=scene.fps,
                       frames=scene.num_frames, duration_s=scene.duration, background_label=BACKGROUND,
                       generator_version=GENERATOR_VERSION)
    return path


def write_surveillance_videos(out_dir: str | Path, count: int, seed: int, duration_s: float) -> list[Path]:
    """``count`` surveillance videos ``surveillance_<seed>_<i>.mp4`` with ground truth; seeds derive from ``seed``."""
    seeds = np.random.SeedSequence([seed, 2]).generate_state(count)
    return [write_video(surveillance_scene(int(s), duration_s), Path(out_dir) / f"surveillance_{seed}_{i}.mp4")
            for i, s in enumerate(seeds)]


def write_clip_folders(out_dir: str | Path, per_class: int, seed: int) -> None:
    """``out_dir/<label>/<label>_<i>.mp4``: each file one action (or background), the layout ``train`` reads."""
    seeds = np.random.SeedSequence([seed, 3]).generate_state(per_class * len(LABELS))
    for i, s in enumerate(seeds):
        label = LABELS[i % len(LABELS)]
        scene = action_scene(int(s), label)
        segments = scene.segments or [Segment(0.0, scene.duration, label)]
        start = max(0, int((segments[0].start - 0.2) * scene.fps))
        stop = min(scene.num_frames, int((segments[0].end + 0.2) * scene.fps) + 1)
        path = Path(out_dir) / label / f"{label.replace(' ', '_')}_{i // len(LABELS)}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), scene.fps, FRAME_SIZE)
        for index in range(start, stop):
            writer.write(cv2.cvtColor(scene.frame(index), cv2.COLOR_RGB2BGR))
        writer.release()


DEMO_SEED = 20240611
DEMO_ACTIONS = ["walking right", "waving", "jumping", "sitting down", "walking left", "falling down"]


def demo_video(cache_dir: str | Path | None = None) -> Path:
    """The demo video (about 30 s of the six actions), generated on first use into ``cache_dir``, by
    default the checkout's ``.cache/`` or the user cache folder (`streamrec.config.runtime_dir`)."""
    cache = Path(cache_dir) if cache_dir else runtime_dir("videos")
    path = cache / f"demo_{DEMO_SEED}_v{GENERATOR_VERSION}.mp4"
    if not (path.is_file() and ground_truth_path(path).is_file()):
        temporary = path.with_name(f"partial_{path.name}")  # never leave a half-written demo behind
        write_video(scripted_scene(DEMO_SEED, DEMO_ACTIONS), temporary)
        ground_truth_path(temporary).replace(ground_truth_path(path))
        temporary.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamrec.procedural", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    clips = sub.add_parser("clips", help="one folder of short clips per class (what `train --data DIR` reads)")
    clips.add_argument("out", type=Path)
    clips.add_argument("--per-class", type=int, default=20)
    clips.add_argument("--seed", type=int, default=0)
    videos = sub.add_parser("surveillance", help="long videos of several actions with ground truth (.json)")
    videos.add_argument("out", type=Path)
    videos.add_argument("--count", type=int, default=1)
    videos.add_argument("--minutes", type=float, default=3.0)
    videos.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.what == "clips":
        write_clip_folders(args.out, args.per_class, args.seed)
        print(f"wrote {args.per_class} clips for each of {len(LABELS)} classes under {args.out}")
    else:
        for path in write_surveillance_videos(args.out, args.count, args.seed, args.minutes * 60):
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
