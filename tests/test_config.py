import pytest

from streamrec.config import apply_override, load_config, load_labels, parse_stream_entry, set_value
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
