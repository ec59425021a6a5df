import dataclasses
import functools
import math
import re
import typing
from pathlib import Path

import pytest

from streamrec.detection.config import RANGES as DETECTION_RANGES
from streamrec.config import (RANGES, Config, apply_override, config_from_dict, load_config, load_labels,
                              parse_stream_entry, range_problem, set_value)
from streamrec.errors import StreamrecError


def test_tiny_config_loads_with_defaults():
    config = load_config("slowfast_tiny")
    assert config.clip.input_names == ("slow", "fast")
    assert config.clip.slow_frames == config.clip.num_frames // config.clip.alpha
    assert len(load_labels(config)) == config.model.num_classes


def test_mistyped_key_names_the_key_and_suggests_the_fix():
    with pytest.raises(StreamrecError, match=r"unknown config key 'postprocess.enter_treshold'; did you mean 'enter_threshold'"):
        load_config("slowfast_tiny", ["postprocess.enter_treshold=0.7"])


def test_wrong_type_and_inconsistent_thresholds_are_refused():
    with pytest.raises(StreamrecError, match="'pipeline.hop_frames' must be int"):
        load_config("slowfast_tiny", ["pipeline.hop_frames=fast"])
    with pytest.raises(StreamrecError, match="exit_threshold <= enter_threshold"):
        load_config("slowfast_tiny", ["postprocess.enter_threshold=0.3", "postprocess.exit_threshold=0.5"])
    with pytest.raises(StreamrecError, match="engine.parallel_calls >= 1"):
        load_config("slowfast_tiny", ["engine.parallel_calls=0"])


def test_overrides_parse_values_as_yaml_and_reject_malformed_items():
    data = {}
    apply_override(data, "postprocess.thresholds={waving: [0.8, 0.5]}")
    assert data == {"postprocess": {"thresholds": {"waving": [0.8, 0.5]}}}
    config = load_config("slowfast_tiny", ["postprocess.thresholds={waving: [0.8, 0.5]}"])
    assert config.postprocess.thresholds["waving"].enter == 0.8
    with pytest.raises(StreamrecError, match="section.key=value"):
        apply_override({}, "hop_frames")


def test_a_number_written_with_an_exponent_is_a_number_in_overrides_and_files(tmp_path):
    """PyYAML (YAML 1.1) reads ``7e-1`` as a string, so ``--set ...=7e-1`` was refused as not a float."""
    config = load_config("slowfast_tiny", ["postprocess.enter_threshold=7e-1", "postprocess.exit_threshold=4E-1"])
    assert (config.postprocess.enter_threshold, config.postprocess.exit_threshold) == (0.7, 0.4)
    path = tmp_path / "exp.yaml"
    shipped = (Path(__file__).parent.parent / "configs" / "slowfast_tiny.yaml").read_text()
    path.write_text(shipped.replace("enter_threshold: 0.6", "enter_threshold: 8e-1")
                    .replace("exit_threshold: 0.4", "exit_threshold: 1_0e-2"))
    config = load_config(path)
    assert (config.postprocess.enter_threshold, config.postprocess.exit_threshold) == (0.8, 0.1)
    data = {}
    apply_override(data, "events.note=e5")  # no digits before the exponent: still text
    assert data == {"events": {"note": "e5"}}


def test_values_are_set_as_given_and_checked_like_a_files():
    config = load_config("slowfast_tiny", values={"events.event_log": "on", "checkpoint": "w #1.pt",
                                                  "pipeline.hop_frames": 4})
    assert config.events.event_log == "on" and config.checkpoint == "w #1.pt" and config.pipeline.hop_frames == 4
    assert load_config("slowfast_tiny", ["pipeline.hop_frames=6"], {"pipeline.hop_frames": 4}).pipeline.hop_frames == 6
    with pytest.raises(StreamrecError, match="'pipeline.hop_frames' must be int, got 'fast'"):
        load_config("slowfast_tiny", values={"pipeline.hop_frames": "fast"})
    with pytest.raises(StreamrecError, match="unknown config key 'events.event_logs'; did you mean 'event_log'"):
        load_config("slowfast_tiny", values={"events.event_logs": "x"})
    data = {"pipeline": 3}
    with pytest.raises(StreamrecError, match="cannot set 'pipeline.hop_frames': 'pipeline' is not a section"):
        set_value(data, "pipeline.hop_frames", 4)


def test_an_override_that_is_not_yaml_is_one_line():
    with pytest.raises(StreamrecError, match=r"override 'events.event_log=\[a': the value is not valid YAML") as err:
        load_config("slowfast_tiny", ["events.event_log=[a"])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text, where", [
    ('streams: ["door=rtsp://cam:pw@10.0.0.7/x?token=t0k3n"\npipeline:\n  hop_frames: 4\n',  # unclosed bracket
     "expected ',' or ']', but got '<scalar>' at line 2, column 1, while parsing a flow sequence from line 1, "
     "column 10"),
    ("pipeline:\n  hop_frames: 4\n max_batch: 8\n",  # a key out of step with its section
     "expected <block end>, but found '<block mapping start>' at line 3, column 2"),
    ("pipeline:\n  hop_frames: 4\n\tmax_batch: 8\n",  # a tab to indent
     "found character '\\t' that cannot start any token at line 3, column 1"),
    ('events:\n  event_log: "https://u:pw@h/x?token=t0k3n\n',  # an unclosed quote
     "found unexpected end of stream at line 3, column 1, while scanning a quoted scalar from line 2, column 14"),
    ("name: x\nlabels: \x00\n", "unacceptable character #x0000: special characters are not allowed"),
], ids=["unclosed bracket", "indentation", "tab", "unclosed quote", "NUL"])
def test_a_config_file_that_is_not_yaml_is_one_line_with_where_and_the_fix(tmp_path, text, where):
    """PyYAML's own message is about 7 lines and quotes the text around the mistake."""
    path = tmp_path / "cams.yaml"
    path.write_text(text)
    with pytest.raises(StreamrecError) as err:
        load_config(str(path))
    message = str(err.value)
    assert message.startswith(f"config {path} is not valid YAML: {where}"), message
    assert message.endswith("; fix the syntax there (close every bracket and quote, indent with spaces, each key in "
                            "step with its section's)")
    assert "\n" not in message and "<unicode string>" not in message and "^" not in message
    assert ":pw@" not in message and "t0k3n" not in message


def test_an_override_that_is_not_yaml_says_where_in_the_value():
    with pytest.raises(StreamrecError) as err:
        load_config("slowfast_tiny", ['events.event_log="x'])
    assert str(err.value) == ("override 'events.event_log=\"x': the value is not valid YAML (found unexpected end of "
                              "stream at column 3, while scanning a quoted scalar from column 1); quote it")


def test_range_problem_is_the_configs_own_range_check():
    """One bound for each value, read by the config and by flags that take the same value (bench
    engine --parallel-calls LIST)."""
    low, high = RANGES["engine.parallel_calls"]
    assert range_problem("engine.parallel_calls", low) is None and range_problem("engine.parallel_calls", high) is None
    assert range_problem("engine.parallel_calls", high + 1) == f"engine.parallel_calls must be from {low} to {high}, " \
                                                              f"got {high + 1}"
    assert range_problem("pipeline.hop_seconds", math.nan) == "pipeline.hop_seconds must be from 0.001 to 3600, got nan"
    assert range_problem("pipeline.max_batch", 0) == "pipeline.max_batch must be at least 1, got 0"
    with pytest.raises(StreamrecError, match=f"engine.parallel_calls must be from {low} to {high}, got {high + 1}"):
        load_config("slowfast_tiny", [f"engine.parallel_calls={high + 1}"])


def test_a_mistyped_backend_suggests_a_registered_one():
    with pytest.raises(StreamrecError, match="engine.backend 'onxruntime' is not one of torch, onnxruntime, tensorrt, "
                                             "auto; did you mean 'onnxruntime'"):
        load_config("slowfast_tiny", ["engine.backend=onxruntime"])


def test_unknown_config_name_lists_known_ones():
    with pytest.raises(StreamrecError, match="slowfast_tiny"):
        load_config("slowfast_nonexistent")


def test_label_file_must_match_class_count():
    config = load_config("slowfast_tiny", ["model.num_classes=5"])
    with pytest.raises(StreamrecError, match="has 7 names but the model has 5 classes"):
        load_labels(config)


def test_stream_entries_take_an_optional_id():
    assert parse_stream_entry("lobby=rtsp://cam/1", 0) == {"id": "lobby", "source": "rtsp://cam/1"}
    assert parse_stream_entry("rtsp://host/s?user=a", 2) == {"id": "cam2", "source": "rtsp://host/s?user=a"}
    assert parse_stream_entry(0, 1) == {"id": "cam1", "source": "0"}


# --------------------------------------------------------------------------- ranges (issue 16)


def value_outside(bound, below: bool):
    """A value just past ``bound`` (an int range steps by one, a float range by half or double)."""
    if isinstance(bound, int):
        return bound - 1 if below else bound + 1
    if below:
        return bound / 2 if bound > 0 else bound - 0.5
    return bound * 2


# Values that another check ties to the one tested, set beside it so that its ends are allowed.
COMPANIONS = {
    "streaming.average_units": {"streaming.form": "causal"},
    "clip.num_frames": {"clip.alpha": 1},
    "clip.alpha": {"clip.num_frames": 64},
    "clip.short_side": {"clip.crop_size": 16},
    "clip.crop_size": {"clip.short_side": 4096},
    "reconnect.initial_delay_s": {"reconnect.max_delay_s": 3600},
    "reconnect.max_delay_s": {"reconnect.initial_delay_s": 0.01},
    "detection.motion.max_aspect": {"detection.motion.min_aspect": 0.1},
    "detection.motion.min_aspect": {"detection.motion.max_aspect": 20},
    "detection.score_threshold": {"detection.tracker.high_score": 1.0, "detection.tracker.new_track_score": 1.0},
    "detection.tracker.high_score": {"detection.score_threshold": 0.0, "detection.tracker.new_track_score": 1.0},
    "detection.tracker.new_track_score": {"detection.score_threshold": 0.0, "detection.tracker.high_score": 0.0},
}


# Numbers checked by a rule of their own rather than a range.
CHECKED_ELSEWHERE = {"postprocess.enter_threshold", "postprocess.exit_threshold"}  # 0 <= exit <= enter <= 1


def numeric_paths(cls, prefix="") -> set[str]:
    """The dotted path of every int or float field (optional or not) in a config dataclass and its sections."""
    paths = set()
    for name, hint in typing.get_type_hints(cls).items():
        inner = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) else [hint]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            paths |= numeric_paths(inner[0], f"{prefix}{name}.")
        elif len(inner) == 1 and inner[0] in (int, float):
            paths.add(f"{prefix}{name}")
    return paths


ALL_RANGES = {**RANGES, **DETECTION_RANGES}  # the detection: section keeps its own, beside its detectors


def test_every_numeric_value_has_a_named_range():
    assert numeric_paths(Config) - CHECKED_ELSEWHERE == set(ALL_RANGES)


@pytest.mark.parametrize("path", sorted(ALL_RANGES))
def test_every_numeric_value_is_refused_outside_its_named_range(path):
    low, high = ALL_RANGES[path]
    companions = COMPANIONS.get(path, {})
    ends = [low] + ([high] if high != math.inf else [])
    for value in ends:  # both ends are allowed
        assert functools.reduce(getattr, path.split("."), load_config("slowfast_tiny", values={**companions, path: value})) \
            == value
    outside = [value_outside(low, below=True)] + ([value_outside(high, below=False)] if high != math.inf else [])
    for value in outside:
        with pytest.raises(StreamrecError) as err:
            load_config("slowfast_tiny", values={**companions, path: value}, flags={path: "--flag"})
        message = str(err.value)
        assert message.startswith("--flag: ") and path in message and "must be" in message, message
        assert "\n" not in message


def test_a_batch_and_a_ring_buffer_must_fit_in_memory():
    """slowfast_tiny: a 96x96 clip of 16 Fast and 4 Slow frames is 552960 bytes; 8 GiB hold 15534."""
    assert load_config("slowfast_tiny", ["pipeline.max_batch=15534"]).pipeline.max_batch == 15534
    for value in ("15535", "1000000000", "99999999999999999999"):
        with pytest.raises(StreamrecError, match=r"^--set: pipeline.max_batch must be from 1 to 15534, got "
                                                 rf"{value}: a batch of 96x96 clips takes 0.53 MiB a clip"):
            load_config("slowfast_tiny", [f"pipeline.max_batch={value}"])
    # A ring buffer holds span 32 + hop 8 + slack frames of 27648 bytes: 310689 frames fit in 8 GiB.
    assert load_config("slowfast_tiny", ["pipeline.buffer_slack=310649"]).pipeline.buffer_slack == 310649
    for value in ("310650", "1000000000"):
        with pytest.raises(StreamrecError, match=r"^--set: a stream's ring buffer would hold"):
            load_config("slowfast_tiny", [f"pipeline.buffer_slack={value}"])
    load_config("slowfast_tiny", ["pipeline.hop_seconds=3600"])  # 108000 frames at 30 fps fit ...
    with pytest.raises(StreamrecError, match="a stream's ring buffer would hold 3600040 frames"):
        load_config("slowfast_tiny", ["pipeline.hop_seconds=3600", "pipeline.assumed_fps=1000"])  # ... not at 1000


def test_the_issues_accepted_values_are_refused_with_the_range():
    for override, message in [("pipeline.stall_timeout_s=0", "pipeline.stall_timeout_s must be from 1 to 3600, got 0"),
                              ("events.event_log_max_mb=0", "events.event_log_max_mb must be from 0.001 to 1048576"),
                              ("events.event_log_max_mb=-1", "events.event_log_max_mb must be from 0.001 to 1048576"),
                              ("events.send_hwm=0", "events.send_hwm must be from 1 to 10000000, got 0"),
                              ("reconnect.max_retries=-2", "reconnect.max_retries must be from -1 to 1000000"),
                              ("reconnect.max_delay_s=0.1", "initial_delay_s must not exceed reconnect.max_delay_s"),
                              ("clip.std=[0.2, 0, 0.2]", "clip.std values must be from 0.001 to 1"),
                              ("pipeline.assumed_fps=.nan", "pipeline.assumed_fps must be from 1 to 1000, got nan")]:
        with pytest.raises(StreamrecError, match=re.escape(message)):
            load_config("slowfast_tiny", [override])


def test_a_bad_value_names_where_it_came_from():
    with pytest.raises(StreamrecError, match=r"^--hop: pipeline.hop_frames must be from 1 to 100000, got 0$"):
        load_config("slowfast_tiny", values={"pipeline.hop_frames": 0}, flags={"pipeline.hop_frames": "--hop"})
    with pytest.raises(StreamrecError, match=r"^--set: pipeline.hop_frames must be"):  # --set has the last word
        load_config("slowfast_tiny", ["pipeline.hop_frames=0"], {"pipeline.hop_frames": 4}, {"pipeline.hop_frames": "--hop"})
    with pytest.raises(StreamrecError, match=r"^--set: 'pipeline.max_batch' must be int, got 'many'"):
        load_config("slowfast_tiny", ["pipeline.max_batch=many"])
    with pytest.raises(StreamrecError, match=r"^--source: stream 'cam0': synthetic source option 'fps=0'"):
        load_config("slowfast_tiny", values={"streams": ["synthetic:fps=0"]}, flags={"streams": "--source"})
    with pytest.raises(StreamrecError, match=r"slowfast_tiny.yaml: pipeline.hop_frames must be"):  # from the file
        config_from_dict({**load_config("slowfast_tiny").to_dict(), "pipeline": {"hop_frames": 0}},
                         source="configs/slowfast_tiny.yaml")


# --------------------------------------------------------------------------- streams


@pytest.mark.parametrize("stream_id", ["a.b", "lobby.", "a/b", "a#", "a+b", "a*", "a>b", "a b", "a\tb", "", "a:b"])
def test_stream_ids_cannot_hold_a_topic_separator_or_wildcard(stream_id):
    with pytest.raises(StreamrecError, match=f"stream id {re.escape(repr(stream_id))} may hold only letters, "
                                             "digits, '_' and '-'"):
        load_config("slowfast_tiny", values={"streams": [{"id": stream_id, "source": "synthetic"}]})


@pytest.mark.parametrize("entry", ["a.b=synthetic", "lobby.=x.mp4", "a#=x.mp4", "a+b=0", "a*=0", "a>b=0", "my cam=0"])
def test_an_id_on_the_command_line_is_checked_the_same(entry):
    with pytest.raises(StreamrecError, match=r"^--source: stream id '.*' may hold only letters"):
        load_config("slowfast_tiny", values={"streams": [entry]}, flags={"streams": "--source"})


def test_good_ids_and_unnamed_sources_numbered_by_position():
    config = load_config("slowfast_tiny", values={"streams": ["lobby=x.mp4", "y.mp4", "gate-2_b=0", "Eingang=1",
                                                              "./a=b.mp4"]})
    assert [(s.id, s.source) for s in config.streams] == [
        ("lobby", "x.mp4"), ("cam1", "y.mp4"), ("gate-2_b", "0"), ("Eingang", "1"), ("cam4", "./a=b.mp4")]
    with pytest.raises(StreamrecError, match="stream id 'cam1' is used twice; an unnamed source is cam<N>, N its "
                                             "position among the sources"):
        load_config("slowfast_tiny", values={"streams": ["cam1=x.mp4", "y.mp4"]})


@pytest.mark.parametrize("source, message", [
    ("synthetic:fps=0", "fps must be from 0.1 to 1000"),
    ("synthetic:fps=nan", "fps must be from 0.1 to 1000"),
    ("synthetic:size=100000x100000", "each side must be from 16 to 7680 pixels"),
    ("synthetic:size=7680x7680", "the frame at most 7680x4320"),
    ("synthetic:size=0x10", "each side must be from 16"),
    ("synthetic:frames=0", "frames must be at least 1"),
    ("synthetic:seed=-1", "seed is a whole number"),
    ("synthetic:speed=2", "bad synthetic source option 'speed=2'"),
    ("synthetic:start=-1", "start must be from 0 to 10"),
    ("synthetic:start=soon", "start is a number"),
    ("rtsp://bob:pw@[::1", "source rtsp://bob:***@[::1 is not a valid URL"),
    ("rtsp://cam:99999/live", "is not a valid URL"),
    ("rtsp:///live", "names no host"),
    ("ftp://user:pw@host/clip.mp4", "source ftp://user:***@host/clip.mp4: 'ftp://' is not a source streamrec reads"),
    ("   ", "empty source"),
])
def test_a_bad_source_is_refused_when_the_config_is_read(source, message):
    with pytest.raises(StreamrecError, match=re.escape(message)) as err:
        load_config("slowfast_tiny", values={"streams": [{"id": "cam", "source": source}]})
    assert ":pw@" not in str(err.value)


def test_good_sources_are_accepted():
    sources = ["synthetic", "synthetic:size=7680x4320,fps=0.1,frames=1,seed=4294967295,start=10", "0", "/dev/video2",
               "rtsp://user:pw@10.0.0.7:554/stream1?channel=1", "https://[::1]:8443/v.mp4", "udp://@:1234",
               "file:///videos/a.mp4", "clip.mp4"]
    config = load_config("slowfast_tiny", values={"streams": sources})
    assert [s.source for s in config.streams] == sources


# --------------------------------------------------------------------------- events


def test_publish_and_metrics_addresses_are_checked():
    for address in ("tcp://127.0.0.1:5555", "tcp://*:5556", "tcp://127.0.0.1:*", "ipc:///tmp/streamrec.ipc"):
        assert load_config("slowfast_tiny", values={"events.publish": address}).events.publish == address
    for address, message in [("garbage", "'garbage' is not a ZeroMQ address"),
                             ("tcp://127.0.0.1", "'tcp://127.0.0.1' needs a host and a port from 1 to 65535"),
                             ("tcp://127.0.0.1:70000", "'tcp://127.0.0.1:70000' needs a host and a port")]:
        with pytest.raises(StreamrecError, match=f"^--publish: events.publish {re.escape(message)}"):
            load_config("slowfast_tiny", values={"events.publish": address}, flags={"events.publish": "--publish"})
    for address in ("127.0.0.1:9108", "9108", ":9108"):
        assert load_config("slowfast_tiny", values={"events.metrics": address}).events.metrics == address
    with pytest.raises(StreamrecError, match="events.metrics 'localhost' must be HOST:PORT"):
        load_config("slowfast_tiny", values={"events.metrics": "localhost"})


def test_curve_is_all_or_nothing_and_needs_an_allowed_key(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    flags = {"events.curve_secret_key": "--curve-secret-key", "events.curve_allowed_clients": "--curve-allowed-clients"}
    curve = {"events.curve_secret_key": str(tmp_path / "server.key_secret"), "events.curve_allowed_clients": str(allowed)}
    with pytest.raises(StreamrecError, match=r"^--curve-allowed-clients: .* holds no public key \(\*\.key\), so no "
                                             "subscriber could ever connect"):
        load_config("slowfast_tiny", values=curve, flags=flags)
    (allowed / "notes.txt").write_text("not a key")
    with pytest.raises(StreamrecError, match="holds no public key"):
        load_config("slowfast_tiny", values=curve, flags=flags)
    (allowed / "viewer.key").write_text("public key")
    assert load_config("slowfast_tiny", values=curve).events.curve_allowed_clients == str(allowed)
    with pytest.raises(StreamrecError, match="curve_secret_key is not, so events would go out unencrypted"):
        load_config("slowfast_tiny", values={"events.curve_allowed_clients": str(allowed)})
    with pytest.raises(StreamrecError, match="CURVE needs events.curve_allowed_clients"):
        load_config("slowfast_tiny", values={"events.curve_secret_key": "k"})
    with pytest.raises(StreamrecError, match="is not a folder"):
        load_config("slowfast_tiny", values={**curve, "events.curve_allowed_clients": str(tmp_path / "nope")})
    # Nothing published: nothing to encrypt, nothing to check.
    load_config("slowfast_tiny", values={**curve, "events.curve_allowed_clients": "", "events.publish": None})


def test_shown_query_keys_are_plain_keys():
    assert load_config("slowfast_tiny", ["events.show_query_keys=[channel, subtype]"]).events.show_query_keys == \
        ("channel", "subtype")
    with pytest.raises(StreamrecError, match="events.show_query_keys holds 'a=b': a query key"):
        load_config("slowfast_tiny", ["events.show_query_keys=[a=b]"])
