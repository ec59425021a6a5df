"""Multi-person procedural scenes: deterministic, boxes on the drawn pixels, nearer people on top,
people walking in and out, and ground truth that reads back and scores itself perfectly."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from streamrec.errors import StreamrecError
from streamrec.evaluation import ground_truth_path
from streamrec.evaluation_persons import (
    BoxDetection,
    PersonBox,
    PersonSegment,
    PersonTruth,
    Trajectory,
    frame_average_precision,
    read_person_truth,
    score_person_events,
)
from streamrec.procedural import ACTIONS, LABELS
from streamrec.procedural_group import (
    FRAME_SIZE,
    PEOPLE_RANGE,
    VISIBLE_SHARE,
    GroupScene,
    group_scene,
    main,
    statistics,
    write_group_video,
)

ENTER_AND_LEAVE_SEED = 6  # a 24 s scene where one person walks in and two walk out


@pytest.fixture(scope="module")
def scene() -> GroupScene:
    return group_scene(ENTER_AND_LEAVE_SEED, 24.0)


@pytest.fixture(scope="module")
def truth(scene) -> PersonTruth:
    return scene.truth()


def quiet(scene: GroupScene, background: np.ndarray | None = None, **changes) -> GroupScene:
    """The scene without camera blur and noise (on another background, with other actors, if given)."""
    background = scene.background if background is None else background
    return dataclasses.replace(scene, background=background, blur_sigma=0.0, noise_sigma=0.0, **changes)


def in_white(actor):
    """The actor drawn in white (far limbs at 70% grey), whatever their colours."""
    return dataclasses.replace(actor, look=dataclasses.replace(actor.look, colours={
        part: (255, 255, 255) for part in actor.look.colours}))


def test_same_seed_same_frames_and_truth_in_any_order():
    a, b = group_scene(11, 6.0), group_scene(11, 6.0)
    indices = [0, a.num_frames // 2, a.num_frames - 1]
    forward = [(a.frame(i), a.people(i)) for i in indices]
    backward = [(b.frame(i), b.people(i)) for i in reversed(indices)][::-1]
    for (x, px), (y, py) in zip(forward, backward):
        assert x.dtype == np.uint8 and x.shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)
        np.testing.assert_array_equal(x, y)
        assert px == py
    assert a.segments == b.segments


def test_seeds_vary_people_rate_and_looks():
    scenes = [group_scene(seed, 2.0) for seed in range(10)]
    assert {len(s.actors) for s in scenes} == set(range(PEOPLE_RANGE[0], PEOPLE_RANGE[1] + 1))
    assert len({s.fps for s in scenes}) > 3
    for s in scenes:
        looks = [a.look for a in s.actors]
        assert len({look.colours["shirt"] for look in looks}) == len(looks)  # everyone dressed apart
        assert len({round(look.scale, 3) for look in looks}) == len(looks)
        assert all(look.background is s.background for look in looks)  # one room


def test_boxes_hug_each_persons_drawn_pixels(scene):
    """Each person drawn alone, in white on black: the box is the bounding box of their pixels (at
    least half covered) within 1.5 px on every side, edges of the frame included."""
    black = np.zeros_like(scene.background)
    errors = []
    for actor in scene.actors:
        alone = quiet(scene, black, actors=(in_white(actor),))
        for index in range(0, scene.num_frames, 9):
            people = alone.people(index)
            if not people:
                continue
            [person] = people
            ys, xs = np.nonzero(alone.frame(index).max(axis=2) >= 90)  # far limbs are 178 at full coverage
            drawn = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            np.testing.assert_allclose(person.box, drawn, atol=1.5, err_msg=f"{actor.person} frame {index}")
            errors.append(np.subtract(person.box, drawn))
    assert len(errors) > 50
    centre_offset = np.mean(errors, axis=0).reshape(2, 2).mean(axis=0)  # x, y: a shifted box shows here
    assert np.abs(centre_offset).max() < 0.25


def test_every_drawn_pixel_of_a_visible_person_is_in_their_box(scene, truth):
    """In the full render (no camera effects), whatever differs from the room lies in some visible
    person's box, on frames where nobody is half out of the frame."""
    calm = quiet(scene)
    width, height = FRAME_SIZE
    checked = 0
    for index in range(0, scene.num_frames, 5):
        drawings = calm.drawings(index)
        boxes = [d.box() for d in drawings]
        if any(b[0] < 0 or b[1] < 0 or b[2] > width or b[3] > height for b in boxes):
            continue
        changed = np.abs(calm.frame(index).astype(int) - scene.background).max(axis=2) > 60
        inside = np.zeros_like(changed)
        for person in truth.frames[index]:
            x1, y1, x2, y2 = person.box
            inside[max(0, int(y1) - 1):int(np.ceil(y2)) + 1, max(0, int(x1) - 1):int(np.ceil(x2)) + 1] = True
        assert not (changed & ~inside).any(), f"frame {index}: drawn pixels outside every box"
        checked += 1
    assert checked > 10


def test_nearer_people_are_drawn_over_farther_ones(scene, truth):
    grounds = [a.look.origin[1] for a in scene.actors]
    assert grounds == sorted(grounds)  # drawing order is depth order: lower feet are nearer
    occluded = [(i, p) for i, frame in enumerate(truth.frames) for p in frame if p.occluded > 0.2]
    assert occluded, "the scene should hold an occlusion to check"
    index, hidden = occluded[len(occluded) // 2]
    calm = quiet(scene)
    order = [a.person for a in scene.actors]
    k = order.index(hidden.person)
    nearer = calm.actors[k + 1:]
    # Where a nearer person fully covers a pixel, the frame shows that nearer person, not the hidden one.
    front = quiet(scene, actors=nearer).frame(index)
    coverage = []
    for actor in scene.actors:
        canvas = np.zeros(scene.background.shape[:2], np.uint8)
        actor.drawing(index / scene.fps).draw(canvas, (255,))
        coverage.append(canvas)
    full = np.logical_or.reduce([c == 255 for c in coverage[k + 1:]]) & (coverage[k] > 0)
    assert full.sum() > 20
    np.testing.assert_array_equal(calm.frame(index)[full], front[full])
    # The share recorded is the share of the hidden person's pixels (half covered or more) under nearer people.
    own = coverage[k] >= 128
    under = np.logical_or.reduce([c >= 128 for c in coverage[k + 1:]])
    assert hidden.occluded == pytest.approx((own & under).sum() / own.sum())
    # Swap the depths: the same person is no longer hidden by them.
    swapped = quiet(scene, actors=(*nearer, scene.actors[k]))
    assert [p.occluded for p in swapped.people(index) if p.person == hidden.person] == [0.0]


def test_people_walk_in_and_out_and_are_visible_only_mostly_inside(scene, truth):
    seen = {a.person: [any(p.person == a.person for p in frame) for frame in truth.frames] for a in scene.actors}
    enters = [person for person, v in seen.items() if not v[0] and any(v)]
    leaves = [person for person, v in seen.items() if v[0] and not v[-1]]
    assert enters and leaves, f"seed {ENTER_AND_LEAVE_SEED} should show people walking in and out"
    width = FRAME_SIZE[0]
    for person, step in [(p, 1) for p in enters] + [(p, -1) for p in leaves]:
        v = seen[person]
        edge = v.index(True) if step == 1 else len(v) - 1 - v[::-1].index(True)  # first or last frame in view
        actor = next(a for a in scene.actors if a.person == person)
        [box] = [p.box for p in truth.frames[edge] if p.person == person]
        assert box[0] == 0 or box[2] == width  # in view, cut by a side of the frame
        outside = actor.drawing((edge - step) / scene.fps).box()  # the frame before (after): mostly outside
        inside = np.clip(outside, 0, [width, FRAME_SIZE[1]] * 2)

        def area(box):
            return (box[2] - box[0]) * (box[3] - box[1])

        share = area(inside) / area(outside)
        assert 0 < share < VISIBLE_SHARE
        # The walk in (out) is a segment that starts (ends) at the frame where the person comes (goes).
        walks = [s for s in truth.segments if s.person == person and s.label.startswith("walking")]
        if step == 1:
            assert any(s.start == pytest.approx(edge / scene.fps) for s in walks)
        else:
            assert any(s.end == pytest.approx((edge + 1) / scene.fps) for s in walks)


def test_frame_labels_and_segments_agree(scene, truth):
    assert scene.segments == truth.segments
    assert {s.label for s in truth.segments} <= set(ACTIONS)
    for index, frame in enumerate(truth.frames):
        t = index / scene.fps
        for person in frame:
            assert person.label in LABELS
            covering = [s for s in truth.segments if s.person == person.person and s.start <= t < s.end]
            assert [s.label for s in covering] == ([] if person.label == "standing still" else [person.label])
    for segment in truth.segments:
        frames = range(int(np.ceil(segment.start * scene.fps)), int(np.ceil(segment.end * scene.fps)))
        labels = {p.label for i in frames if i < len(truth.frames) for p in truth.frames[i]
                  if p.person == segment.person}
        assert labels == {segment.label}


def test_video_and_ground_truth_file_round_trip(tmp_path):
    scene = group_scene(3, 4.0)
    path = write_group_video(scene, tmp_path / "g.mp4")
    read = read_person_truth(ground_truth_path(path))
    truth = scene.truth()
    assert (read.fps, read.width, read.height, read.background_label) == (scene.fps, *FRAME_SIZE, "standing still")
    assert read.info["seed"] == 3 and read.people == truth.people
    assert len(read.frames) == scene.num_frames
    for mine, theirs in zip(truth.frames, read.frames):
        assert [(p.person, p.label) for p in mine] == [(p.person, p.label) for p in theirs]
        for p, q in zip(mine, theirs):
            np.testing.assert_allclose(p.box, q.box, atol=0.006)
            assert p.occluded == pytest.approx(q.occluded, abs=0.0006)
    assert [(s.label, s.person) for s in read.segments] == [(s.label, s.person) for s in truth.segments]
    np.testing.assert_allclose([(s.start, s.end) for s in read.segments], [(s.start, s.end) for s in truth.segments],
                               atol=6e-5)
    capture = cv2.VideoCapture(str(path))
    assert capture.get(cv2.CAP_PROP_FPS) == scene.fps
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == scene.num_frames
    assert (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))) == FRAME_SIZE
    capture.release()

    data = json.loads(ground_truth_path(path).read_text())
    data["format"] = "something else"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(StreamrecError, match="not per-person ground truth"):
        read_person_truth(bad)
    data["format"], data["boxes"] = "streamrec-person-truth/1", [[[0, 1, 2]]]
    bad.write_text(json.dumps(data))
    with pytest.raises(StreamrecError, match="is not valid"):
        read_person_truth(bad)
    with pytest.raises(StreamrecError, match="no ground truth"):
        read_person_truth(tmp_path / "missing.json")


def test_truth_scores_itself_perfectly(scene, truth):
    """The scorers on the scene's own truth: every keyframe box and every person's action found."""
    keyframes = truth.keyframe_truth()
    detections = {k: [BoxDetection(p.box, p.label, 1.0) for p in people] for k, people in keyframes.items()}
    ap = frame_average_precision(keyframes, detections)
    assert set(ap) == {p.label for people in keyframes.values() for p in people} and set(ap.values()) == {1.0}
    tracks = truth.trajectories()
    # A tracker that reports each person's box 4 times a second, under track ids of its own.
    hop = 0.25
    predicted_tracks = {100 + person: Trajectory.of([(t, track.box_at(t)) for t in np.arange(0, 30, hop)
                                                     if track.box_at(t) is not None])
                        for person, track in tracks.items()}
    predicted = [dataclasses.replace(s, person=100 + s.person, detected_at=s.start + 0.5) for s in truth.segments]
    scores = score_person_events(truth.segments, tracks, predicted, predicted_tracks, ACTIONS)
    assert sum(s.true_positives for s in scores.values()) == len(truth.segments) > 10
    assert all(s.false_positives == s.false_negatives == 0 for s in scores.values())
    assert [d for s in scores.values() for d in s.delays_s] == pytest.approx([0.5] * len(truth.segments))
    # The same actions credited to the wrong people score nothing.
    people = sorted(tracks)
    shifted = {100 + people[(i + 1) % len(people)]: predicted_tracks[100 + p] for i, p in enumerate(people)}
    scores = score_person_events(truth.segments, tracks, predicted, shifted, ACTIONS)
    assert sum(s.true_positives for s in scores.values()) < len(truth.segments) / 4


def test_statistics_and_command_line(tmp_path, capsys):
    frames = ((PersonBox(0, (0, 0, 1, 1), "waving"), PersonBox(1, (0, 0, 1, 1), "standing still", 0.3)),
              (PersonBox(0, (0, 0, 1, 1), "waving"),))
    truth = PersonTruth(1.0 / 60, 320, 240, frames, (PersonSegment(0, 60, "waving", 0),), "standing still")
    assert statistics(truth) == {"people": 2, "people_per_frame": 1.5, "segments_per_person_minute": round(1 / 3, 2),
                                 "occluded_frame_share": 0.5}
    assert main([str(tmp_path), "--count", "1", "--minutes", "0.03", "--seed", "5"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(str(tmp_path / "group_5_0.mp4")) and "people_per_frame" in line
    assert read_person_truth(tmp_path / "group_5_0.json").info["generator"] == "streamrec.procedural_group"
    with pytest.raises(StreamrecError, match="too short"):
        group_scene(0, 0.5)
