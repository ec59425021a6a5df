"""Procedural scenes with several people: who does what, and where, for the per-person mode.

Two to four stick figures of `streamrec.procedural` share one room. Each has its own look
(colours, size, line widths), its own script of actions and background pieces (a
`Choreographer`'s), and a place on the floor: nearer people stand lower in the frame, are drawn
larger, and are drawn over farther ones, so they occlude them. Some are there from the start and
some walk in from a side later; some walk out before the end. The room and the camera's blur and
noise are shared. Everything is a pure function of a seed, and any frame (and its ground truth,
`GroupScene.people`) renders on its own.

The frame is 320x240 (QVGA): twice the single-person scenes' width and height at the same 4:3,
room for four people side by side with space to walk in and out, each a quarter to two fifths
of the height (55-105 px), so that in the demo RoI model's 128 px letterboxed input a person is
still 22-42 px tall (the single-person model sees its one figure at 35-46 px).

Ground truth, per frame: every visible person's box, from the drawn joints and line widths
(`streamrec.procedural.FigureDrawing.box`) cut to the frame, with the label at that moment and
the share of their pixels hidden by nearer people; a person with less than half of their box
inside the frame is not visible. Per person: the labelled segments while visible (a walk in
starts when the walker comes into view). `write_group_video` writes an MP4 and its ground truth
in the JSON format of `streamrec.evaluation_persons` (read it with
`streamrec.evaluation_persons.read_person_truth`).

``python -m streamrec.procedural_group OUT --count N --minutes M --seed S`` writes videos.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from streamrec.config import runtime_dir
from streamrec.errors import StreamrecError
from streamrec.evaluation import ground_truth_path
from streamrec.evaluation_persons import PersonBox, PersonSegment, PersonTruth, read_person_truth, write_person_truth
from streamrec.procedural import (
    BACKGROUND,
    FPS_RANGE,
    Appearance,
    Choreographer,
    FigureDrawing,
    Script,
    camera,
    figure_drawing,
    random_colour,
    random_figure_colours,
    random_line_widths,
    room_background,
)

GENERATOR_VERSION = 1  # bump when the same seed would render differently (through streamrec.procedural too)
FRAME_SIZE = (320, 240)  # width, height
PEOPLE_RANGE = (2, 4)
HORIZON_RANGE = (0.3, 0.55)  # where the wall meets the floor, as a share of the height
GROUND_RANGE = (0.62, 0.96)  # where feet stand, far to near, as a share of the height
SCALE_RANGE = (20.0, 32.0)  # pixels per body unit, far to near (a figure is about 3 units tall)
SIZE_SPREAD = 0.08  # people at one depth differ in size by up to this share
OFFSTAGE = 1.6  # body units beyond a frame edge where people wait to walk in and go when they leave
ENTER_SHARE, LEAVE_SHARE = 0.5, 0.5  # of people who walk in after the start, and who walk out before the end
VISIBLE_SHARE = 0.5  # of a person's box that must be inside the frame for them to be visible


@dataclass(frozen=True)
class Actor:
    person: int
    script: Script
    look: Appearance  # origin: the frame's left edge on the person's floor line

    def drawing(self, time: float) -> FigureDrawing:
        return figure_drawing(self.script.pose(time), self.look)


@dataclass(frozen=True, eq=False)
class GroupScene:
    seed: int
    fps: int
    num_frames: int
    background: np.ndarray  # uint8 RGB [H, W, 3]
    blur_sigma: float
    noise_sigma: float
    actors: tuple[Actor, ...]  # in drawing order: farthest first, so nearer people cover them

    @property
    def size(self) -> tuple[int, int]:
        return self.background.shape[1], self.background.shape[0]

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    @property
    def times(self) -> np.ndarray:
        """Frame timestamps in seconds, as a video file reports them."""
        return np.arange(self.num_frames) / self.fps

    def drawings(self, index: int) -> list[FigureDrawing]:
        """Every actor's figure on frame ``index``, in drawing order."""
        return [actor.drawing(index / self.fps) for actor in self.actors]

    def frame(self, index: int, drawings: list[FigureDrawing] | None = None) -> np.ndarray:
        """Frame ``index`` (uint8 RGB), the same every time: camera noise is seeded by the index."""
        image = self.background.copy()
        for drawing in drawings or self.drawings(index):
            drawing.draw(image)
        return camera(image, self.blur_sigma, self.noise_sigma, np.random.default_rng([self.seed, index]))

    def frames(self) -> Iterator[np.ndarray]:
        return (self.frame(i) for i in range(self.num_frames))

    def visible_box(self, drawing: FigureDrawing) -> np.ndarray | None:
        """The drawing's box cut to the frame, or None when less than `VISIBLE_SHARE` of it is inside."""
        box = drawing.box()
        width, height = self.size
        inside = np.clip(box, 0, [width, height, width, height])
        area = (box[2] - box[0]) * (box[3] - box[1])
        if (inside[2] - inside[0]) * (inside[3] - inside[1]) < VISIBLE_SHARE * area:
            return None
        return inside

    def people(self, index: int, drawings: list[FigureDrawing] | None = None) -> tuple[PersonBox, ...]:
        """Ground truth of frame ``index``: every visible person, in drawing order."""
        drawings = drawings or self.drawings(index)
        boxes = [d.box() for d in drawings]
        masks: dict[int, np.ndarray] = {}  # drawn only where someone nearer overlaps someone's box

        def mask(k: int) -> np.ndarray:
            if k not in masks:
                canvas = np.zeros(self.background.shape[:2], np.uint8)
                drawings[k].draw(canvas, (255,))
                masks[k] = canvas >= 128  # pixels at least half covered
            return masks[k]

        result = []
        for k, actor in enumerate(self.actors):
            box = self.visible_box(drawings[k])
            if box is None:
                continue
            nearer = [j for j in range(k + 1, len(drawings)) if _overlap(boxes[k], boxes[j])]
            hidden = 0.0
            if nearer:
                covered = np.logical_or.reduce([mask(j) for j in nearer])
                drawn = int(mask(k).sum())
                hidden = int((mask(k) & covered).sum()) / drawn if drawn else 1.0
            result.append(PersonBox(actor.person, tuple(float(v) for v in box),
                                    actor.script.piece_at(index / self.fps).label, hidden))
        return tuple(result)

    @cached_property
    def segments(self) -> tuple[PersonSegment, ...]:
        """Each person's labelled pieces while visible, by start time (see `_segments`)."""
        return self._segments({actor.person: [self.visible_box(actor.drawing(i / self.fps)) is not None
                                              for i in range(self.num_frames)] for actor in self.actors})

    def _segments(self, visible: dict[int, list[bool]]) -> tuple[PersonSegment, ...]:
        """The labelled pieces of each person's script over the runs of frames ``visible[person]``.

        A piece seen from its first frame to its last keeps its own start and end; where the
        person comes into view during it, it starts at that frame, and where they go out of
        view, it ends at the first frame they are not seen.
        """
        segments = []
        for actor in self.actors:
            seen = visible[actor.person]
            pieces = [actor.script.piece_at(i / self.fps) for i in range(self.num_frames)]
            i = 0
            while i < self.num_frames:
                current = pieces[i]
                if not seen[i] or current.label == BACKGROUND:
                    i += 1
                    continue
                first = i
                while i + 1 < self.num_frames and seen[i + 1] and pieces[i + 1] is current:
                    i += 1
                start = current.start if first == 0 or pieces[first - 1] is not current else first / self.fps
                ends_with_piece = i + 1 == self.num_frames or pieces[i + 1] is not current
                end = min(current.end, self.duration) if ends_with_piece else (i + 1) / self.fps
                segments.append(PersonSegment(start, end, current.label, actor.person))
                i += 1
        return tuple(sorted(segments, key=lambda s: (s.start, s.person)))

    def truth(self) -> PersonTruth:
        """The whole video's ground truth (every frame's people and every segment)."""
        return self._truth(tuple(self.people(i) for i in range(self.num_frames)))

    def _truth(self, frames: tuple[tuple[PersonBox, ...], ...]) -> PersonTruth:
        """The ground truth with these frames' people (`people` of every frame)."""
        visible = {actor.person: [False] * self.num_frames for actor in self.actors}
        for index, people in enumerate(frames):
            for person in people:
                visible[person.person][index] = True
        width, height = self.size
        return PersonTruth(float(self.fps), width, height, frames, self._segments(visible), BACKGROUND,
                           {"seed": self.seed, "duration_s": self.duration, "generator_version": GENERATOR_VERSION,
                            "generator": "streamrec.procedural_group"})


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


def _actor_script(rng: np.random.Generator, stage_width: float, duration_s: float) -> Script:
    """One person's script: maybe walking in from a side first, random actions with idle gaps,
    and maybe walking out before the end; it covers the whole scene."""
    c = Choreographer(rng, stage_width)
    if rng.random() < ENTER_SHARE:
        direction = float(rng.choice([-1.0, 1.0]))
        c.x = -OFFSTAGE if direction > 0 else stage_width + OFFSTAGE
        c.idle(rng.uniform(0.0, 0.4) * duration_s)  # waiting out of sight
        span = c.x_max - c.x_min
        target = rng.uniform(c.x_min + 0.15 * span, c.x_max - 0.15 * span)
        c.walk(direction, distance=abs(target - c.x))
    leaves = rng.random() < LEAVE_SHARE
    leave_at = rng.uniform(0.55, 0.95) * duration_s if leaves else duration_s
    c.act_randomly(until=leave_at - 6.0)
    if leaves:
        c.stand_up_if_down()
        c.idle(rng.uniform(0.5, 2.0))
        direction = -1.0 if c.x < stage_width / 2 else 1.0
        c.walk(direction, distance=c.x + OFFSTAGE if direction < 0 else stage_width + OFFSTAGE - c.x)
        c.idle(max(duration_s - c.time, 0.0) + 1.0)  # out of sight
    else:
        c.rest(max(duration_s - c.time, 0.0) + 1.0)
    return c.script()


def group_scene(seed: int, duration_s: float, difficulty: float = 1.0, people: int | None = None,
                fps: int | None = None) -> GroupScene:
    """A room with 2-4 people acting on their own for ``duration_s`` seconds.

    ``difficulty`` (0..1) scales clutter, camera noise and blur and lowers the figures'
    contrast against the room, as in `streamrec.procedural.random_appearance`. ``people`` and
    ``fps`` fix what the seed would draw (benchmarks want a known load); everything else stays
    as the seed makes it.
    """
    if not duration_s >= 1.0:
        raise StreamrecError(f"a group scene of {duration_s} s is too short; give at least 1 second")
    rng = np.random.default_rng(seed)
    width, height = FRAME_SIZE
    drawn_fps = int(rng.integers(FPS_RANGE[0], FPS_RANGE[1] + 1))  # drawn either way: the seed's other draws stay
    drawn_count = int(rng.integers(PEOPLE_RANGE[0], PEOPLE_RANGE[1] + 1))
    fps, count = fps or drawn_fps, people or drawn_count
    horizon = int(height * rng.uniform(*HORIZON_RANGE))
    wall, floor = random_colour(rng), random_colour(rng)
    background = room_background(rng, width, height, horizon, wall, floor, difficulty)
    noise_sigma = float(difficulty * rng.uniform(0, 7))
    blur_sigma = float(difficulty * rng.uniform(0, 1.0))
    placed = []
    for person in range(count):
        own = np.random.default_rng([seed, 1, person])  # each person's own stream: one more leaves the others alone
        depth = own.uniform()
        ground = height * (GROUND_RANGE[0] + depth * (GROUND_RANGE[1] - GROUND_RANGE[0]))
        scale = (SCALE_RANGE[0] + depth * (SCALE_RANGE[1] - SCALE_RANGE[0])) * own.uniform(1 - SIZE_SPREAD,
                                                                                        1 + SIZE_SPREAD)
        colours = random_figure_colours(own, wall, floor, difficulty)
        limb_px, torso_px = random_line_widths(own, scale)
        look = Appearance(background, (0.0, ground), scale, colours, limb_px, torso_px, noise_sigma, blur_sigma)
        placed.append((ground, person, Actor(person, _actor_script(own, width / scale, duration_s), look)))
    actors = tuple(actor for _, _, actor in sorted(placed, key=lambda p: (p[0], p[1])))
    return GroupScene(seed, fps, int(duration_s * fps), background, blur_sigma, noise_sigma, actors)


# --------------------------------------------------------------------------- files


def write_group_video(scene: GroupScene, path: str | Path) -> Path:
    """An MP4 of the scene and, next to it, its ground truth (``.json``, `streamrec.evaluation_persons`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), scene.fps, scene.size)
    if not writer.isOpened():
        raise StreamrecError(f"cannot write video {path}; check the folder is writable")
    frames = []
    try:
        for index in range(scene.num_frames):
            drawings = scene.drawings(index)
            writer.write(cv2.cvtColor(scene.frame(index, drawings), cv2.COLOR_RGB2BGR))
            frames.append(scene.people(index, drawings))
    finally:
        writer.release()
    write_person_truth(ground_truth_path(path), scene._truth(tuple(frames)))
    return path


def write_group_videos(out_dir: str | Path, count: int, seed: int, duration_s: float) -> list[Path]:
    """``count`` videos ``group_<seed>_<i>.mp4`` with ground truth; their seeds derive from ``seed``."""
    seeds = np.random.SeedSequence([seed, 4]).generate_state(count)
    return [write_group_video(group_scene(int(s), duration_s), Path(out_dir) / f"group_{seed}_{i}.mp4")
            for i, s in enumerate(seeds)]


GROUP_DEMO_SEED = 20241130
GROUP_DEMO_SECONDS = 45.0


def group_demo_video(cache_dir: str | Path | None = None) -> Path:
    """The per-person demo video (45 s of 2-4 people), generated on first use into ``cache_dir``,
    by default the checkout's ``.cache/`` or the user cache folder (`streamrec.config.runtime_dir`)."""
    cache = Path(cache_dir) if cache_dir else runtime_dir("videos")
    path = cache / f"group_demo_{GROUP_DEMO_SEED}_v{GENERATOR_VERSION}.mp4"
    if not (path.is_file() and ground_truth_path(path).is_file()):
        temporary = path.with_name(f"partial_{path.name}")  # never leave a half-written demo behind
        write_group_video(group_scene(GROUP_DEMO_SEED, GROUP_DEMO_SECONDS), temporary)
        ground_truth_path(temporary).replace(ground_truth_path(path))
        temporary.replace(path)
    return path


def statistics(truth: PersonTruth, occluded_at_least: float = 0.1) -> dict[str, float]:
    """What a video holds: people per frame, action segments per minute a person is in view,
    and the share of frames where someone has at least ``occluded_at_least`` of their pixels hidden."""
    frames = len(truth.frames)
    person_frames = sum(len(f) for f in truth.frames)
    person_minutes = person_frames / truth.fps / 60
    return {
        "people": len(truth.people),
        "people_per_frame": round(person_frames / frames, 2) if frames else 0.0,
        "segments_per_person_minute": round(len(truth.segments) / person_minutes, 2) if person_minutes else 0.0,
        "occluded_frame_share": round(sum(any(p.occluded >= occluded_at_least for p in f) for f in truth.frames)
                                      / frames, 3) if frames else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamrec.procedural_group", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for group_<seed>_<i>.mp4 and their ground truth (.json)")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.count < 1 or args.minutes <= 0:
        parser.error("--count must be at least 1 and --minutes positive")
    for path in write_group_videos(args.out, args.count, args.seed, args.minutes * 60):
        print(path, statistics(read_person_truth(ground_truth_path(path))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
