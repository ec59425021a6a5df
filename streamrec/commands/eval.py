"""``run_stream.py eval``: streaming accuracy of a model, config, backend and hop on long videos.

    run_stream.py eval --seed 12345                  # fresh procedural surveillance videos
    run_stream.py eval cam1.mp4 cam2.mp4 --hop 4     # your videos, each with cam1.json ground truth
    run_stream.py eval --seed 12345 --zero-fast      # the Slow pathway alone: what motion adds

The real pipeline runs over every video (offline: every hop served); its ``action_start`` /
``action_end`` events are scored against the ground truth's segments (see
`streamrec.evaluation`). Labels in ``postprocess.background_labels`` are not scored: the
pipeline never reports them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from streamrec.commands.flags import (add_config_flags, add_engine_flags, add_hop_flags, config_from_flags,
                                      MAX_MINUTES, non_negative_int, positive_int, video_minutes)
from streamrec.commands.train import recorded_command
from streamrec.config import load_labels
from streamrec.errors import StreamrecError, check_output_path

if TYPE_CHECKING:
    from streamrec.evaluation_persons import Identity


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="*", type=Path,
                        help="videos to score, each with ground truth next to it (VIDEO.json); "
                             "default: generate surveillance videos from --seed")
    parser.add_argument("--seed", type=non_negative_int, default=12345, help="seed of the generated videos (default %(default)s)")
    parser.add_argument("--count", type=positive_int, default=3, help="generated videos (default %(default)s)")
    parser.add_argument("--minutes", type=video_minutes, default=3.0,
                        help=f"length of each generated video, at most {MAX_MINUTES} (default %(default)s)")
    parser.add_argument("--keep-videos", type=Path, metavar="DIR", help="write the generated videos here and keep them")
    add_config_flags(parser)
    add_engine_flags(parser)
    add_hop_flags(parser)
    parser.add_argument("--iou", type=float, default=0.5, help="temporal IoU for a detection to count (default %(default)s)")
    parser.add_argument("--zero-fast", action="store_true",
                        help="feed the Fast pathway mean-colour frames (zero after normalisation): the Slow path alone")
    parser.add_argument("--sweep", action="store_true",
                        help="also replay the run's scores under a grid of postprocess smoothing and thresholds "
                             "(tune on a validation seed, never on the test seed)")
    parser.add_argument("--persons", action="store_true",
                        help="per-person mode (default config slowfast_tiny_roi): generated videos of 2-4 people, "
                             "scored by per-person event F1 and AVA's frame AP, with the detected boxes and with the "
                             "ground-truth boxes")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")


def main(args: argparse.Namespace) -> int:
    from streamrec.evaluation import (combine, format_table, ground_truth_path, read_ground_truth, report,
                                      run_pipeline, score_segments, segments_from_events, sweep)

    if not 0 < args.iou <= 1:
        raise StreamrecError("--iou must be in (0, 1]")
    if args.json:
        check_output_path(args.json, "--json")
    if args.persons:
        return persons_main(args)
    # every hop served, events only to the scorer
    config = config_from_flags(args, {"pipeline.realtime": False, "events.publish": None, "events.stdout": False})
    labels = load_labels(config)
    scored = [name for name in labels if name not in config.postprocess.background_labels]

    with tempfile.TemporaryDirectory(prefix="streamrec-eval-") as scratch:
        videos = list(args.videos) or _generate(args, Path(scratch))
        for video in videos:
            if not video.is_file():
                raise StreamrecError(f"video {video} not found")
        truth = {video: read_ground_truth(ground_truth_path(video), labels) for video in videos}
        started = time.monotonic()
        records = run_pipeline(config, videos, zero_fast=args.zero_fast)
        seconds = time.monotonic() - started
    known_after_s = records[videos[0]].known_after_s if videos else 0.0  # the same engine ran every video
    per_video = [score_segments(truth[v], segments_from_events(records[v].events, known_after_s), scored, args.iou)
                 for v in videos]
    scores = combine(per_video)

    hop = f"{config.pipeline.hop_seconds} s" if config.pipeline.hop_seconds else f"{config.pipeline.hop_frames} frames"
    source = ", ".join(str(v) for v in args.videos) if args.videos else (
        f"{args.count} generated surveillance video(s) of {args.minutes:g} min, seed {args.seed}")
    print(f"{config.name} ({config.checkpoint or 'random weights'}), backend {config.engine.backend}, hop {hop}"
          f"{', Fast pathway zeroed' if args.zero_fast else ''}")
    streamed = (f", plus the streaming form's {known_after_s:.2f} s: its windows end that long before the frames "
                "that tell them") if known_after_s else ""
    print(f"{source}; event IoU >= {args.iou}; delay = segment start -> action_start (source seconds{streamed})")
    print(format_table(scores))
    print(f"pipeline time {seconds:.1f} s", file=sys.stderr)
    swept = []
    if args.sweep:
        results = sweep([records[v].hops for v in videos], [truth[v] for v in videos], labels, scored,
                        config.postprocess, args.iou, known_after_s)
        swept = [{"smoothing_hops": c.smoothing_hops, "enter_threshold": c.enter_threshold,
                  "exit_threshold": c.exit_threshold, **score.to_dict()} for c, score in results]
        print("\npostprocess sweep (replayed over the same scores), best F1 first:")
        print(f"{'smoothing':>9} {'enter':>5} {'exit':>5} {'precision':>9} {'recall':>6} {'F1':>6} {'delay50':>7} {'delay90':>7}")
        for row in swept[:15]:
            print(f"{row['smoothing_hops']:9d} {row['enter_threshold']:5.2f} {row['exit_threshold']:5.2f} "
                  f"{row['precision']:9.3f} {row['recall']:6.3f} {row['f1']:6.3f} "
                  f"{row['delay_s_median'] or float('nan'):7.2f} {row['delay_s_p90'] or float('nan'):7.2f}")
    if args.json:
        info = {"iou_threshold": args.iou, "config": config.name, "checkpoint": config.checkpoint,
                "backend": config.engine.backend, "hop": hop, "zero_fast": args.zero_fast,
                "postprocess": dataclasses.asdict(config.postprocess),
                "videos": [str(v) for v in args.videos] or None,
                "generated": None if args.videos else {"seed": args.seed, "count": args.count, "minutes": args.minutes},
                "segments": sum(len(t) for t in truth.values()), "pipeline_seconds": round(seconds, 1),
                "streaming_delay_s": round(known_after_s, 3), "command": recorded_command()}
        if swept:
            info["sweep"] = swept
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report(scores, info), indent=1) + "\n")
    return 0


def persons_main(args: argparse.Namespace) -> int:
    """Per-person mode: every hop's boxes and labels published, scored per person and per keyframe,
    once with the config's detector and once with the ground truth's boxes."""
    from streamrec.commands.run import PERSONS_CONFIG
    from streamrec.evaluation import ground_truth_path, report, stream_ids
    from streamrec.evaluation_persons import TruthDetector, read_person_truth

    if args.zero_fast or args.sweep:
        raise StreamrecError("--zero-fast and --sweep are for whole-frame runs; drop them with --persons")
    args.config = args.config or PERSONS_CONFIG
    fixed = {"pipeline.realtime": False, "events.publish": None, "events.stdout": False, "events.predictions": True}
    config = config_from_flags(args, fixed)
    if config.detection is None:
        config = config_from_flags(args, {**fixed, "detection": {}})
    labels = load_labels(config)
    # Every label's score on every box, for AP.
    config = config.replace(postprocess=dataclasses.replace(config.postprocess, top_k=len(labels)))
    with tempfile.TemporaryDirectory(prefix="streamrec-eval-") as scratch:
        videos = list(args.videos) or _generate_groups(args, Path(scratch))
        for video in videos:
            if not video.is_file():
                raise StreamrecError(f"video {video} not found")
        truth = {video: read_person_truth(ground_truth_path(video), labels) for video in videos}
        detected = _score_persons(config, labels, videos, truth, args.iou)
        perfect = _score_persons(config, labels, videos, truth, args.iou, TruthDetector(
            dict(zip(stream_ids(videos), truth.values())), config.clip))
    source = ", ".join(str(v) for v in args.videos) if args.videos else (
        f"{args.count} generated videos of 2-4 people, {args.minutes:g} min each, seed {args.seed}")
    print(f"{config.name} ({config.checkpoint or 'random weights'}), backend {config.engine.backend}, "
          f"detector {config.detection.detector}, hop {config.pipeline.hop_frames} frames")
    print(f"{source}; a detected action counts when its label matches, temporal IoU >= {args.iou} and its track's "
          f"boxes overlap the person's (mean IoU >= 0.5); delay = true start -> action_start (source seconds)")
    for title, run in ((f"with the detected boxes ({config.detection.detector})", detected),
                       ("with the ground-truth boxes (the classifier and tracker alone)", perfect)):
        print(f"\n{title}\n{run.table()}")
    print(f"pipeline time {detected.seconds:.1f} s (detected boxes), {perfect.seconds:.1f} s (ground-truth boxes)",
          file=sys.stderr)
    if args.json:
        info = {"mode": "persons", "iou_threshold": args.iou, "config": config.name, "checkpoint": config.checkpoint,
                "backend": config.engine.backend, "detector": config.detection.detector,
                "postprocess": dataclasses.asdict(config.postprocess), "videos": [str(v) for v in args.videos] or None,
                "generated": None if args.videos else {"seed": args.seed, "count": args.count, "minutes": args.minutes},
                "segments": sum(len(t.segments) for t in truth.values()), "pipeline_seconds": round(detected.seconds, 1),
                **{f"{key}_detected_boxes": value for key, value in detected.figures().items()},
                "ground_truth_boxes": report(perfect.scores, {**perfect.figures(),
                                                              "pipeline_seconds": round(perfect.seconds, 1)}),
                "command": recorded_command()}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report(detected.scores, info), indent=1) + "\n")
    return 0


@dataclasses.dataclass(frozen=True)
class PersonRun:
    """One per-person run over the videos, scored: event counts per class and frame AP."""

    scores: dict
    ap: dict[str, float]
    identity: "Identity"
    seconds: float

    @property
    def map(self) -> float | None:
        from streamrec.evaluation_persons import mean_ap

        return mean_ap(self.ap)

    def table(self) -> str:
        from streamrec.evaluation import format_table

        lines = [format_table(self.scores), f"frame AP at IoU 0.5 (AVA's rule, keyframes at 2 Hz): "
                 f"mAP {self.map:.3f}" if self.ap else "frame AP: no labelled keyframe"]
        ids = self.identity
        lines += [f"  {label:>14} {value:.3f}" for label, value in self.ap.items()]
        lines.append(f"tracks (on keyframes, IoU >= 0.5): people covered {ids.coverage:.3f} of {ids.person_hops} "
                     f"person-hops, {ids.switches} id switches, {ids.tracks} track ids")
        return "\n".join(lines)

    def figures(self) -> dict:
        ids = self.identity
        return {"frame_ap": self.ap, "frame_map": self.map, "coverage": round(ids.coverage, 4),
                "person_hops": ids.person_hops, "id_switches": ids.switches, "track_ids": ids.tracks}


def _score_persons(config, labels: list[str], videos: list[Path], truth: dict, iou: float,
                   detector=None) -> PersonRun:
    from streamrec.evaluation import combine, run_pipeline
    from streamrec.evaluation_persons import (Identity, detections_at_keyframes, frame_average_precision, identity,
                                              predictions_from_events, score_person_events)
    from streamrec.sampling import clip_duration

    scored = [name for name in labels if name not in config.postprocess.background_labels]
    started = time.monotonic()
    records = run_pipeline(config, videos, detector=detector)
    seconds = time.monotonic() - started
    predictions = {v: predictions_from_events(records[v].events) for v in videos}
    scores = combine([score_person_events(truth[v].segments, truth[v].trajectories(), predictions[v].segments,
                                          predictions[v].tracks, scored, iou) for v in videos])
    keyframe_truth, keyframe_detections = {}, {}
    for v in videos:  # keyframes from one clip in: before, no clip is whole
        at, found = detections_at_keyframes(truth[v], predictions[v], start_s=clip_duration(config.clip))
        keyframe_truth.update({(str(v), k): people for k, people in at.items()})
        keyframe_detections.update({(str(v), k): boxes for k, boxes in found.items()})
    ids = sum((identity(truth[v].trajectories(), predictions[v].tracks, [t for t, _ in predictions[v].keyframes])
               for v in videos), Identity(0, 0, 0, 0))
    return PersonRun(scores, frame_average_precision(keyframe_truth, keyframe_detections, labels=scored), ids,
                     seconds)


def _generate_groups(args: argparse.Namespace, scratch: Path) -> list[Path]:
    from streamrec.procedural_group import write_group_videos

    return _generated(args, scratch, f"video(s) of 2-4 people, {args.minutes:g} min,", write_group_videos)


def _generate(args: argparse.Namespace, scratch: Path) -> list[Path]:
    from streamrec.procedural import write_surveillance_videos

    return _generated(args, scratch, f"surveillance video(s) of {args.minutes:g} min", write_surveillance_videos)


def _generated(args: argparse.Namespace, scratch: Path, what: str, write) -> list[Path]:
    """``--count`` videos of ``--minutes`` from ``--seed``, written by ``write`` into ``--keep-videos`` or ``scratch``
    (their flags' types bound both)."""
    out = args.keep_videos or scratch
    print(f"generating {args.count} {what} from seed {args.seed} in {out}", file=sys.stderr)
    return write(out, args.count, args.seed, args.minutes * 60)
