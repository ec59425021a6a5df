"""Every bad input found in issue 16 ends in one line naming the problem and the fix, a non-zero
exit status and no traceback, before anything starts (the real CLI, in a subprocess).

Cases are the issue's, word for word where it gave them; ``{tmp}`` is the test's own folder.
"""

from __future__ import annotations

import pytest

from conftest import run_cli

RUN = ["run", "--publish", "none", "--quiet"]

BAD_INPUTS = [  # (argv, what the error line says)
    (["run", "--source", "rtsp://bob:pw@[::1"], "source rtsp://bob:***@[::1 is not a valid URL"),
    (["run", "--set", "pipeline.max_batch=1000000000"], "--set: pipeline.max_batch must be from 1 to 15534, got 1000000000"),
    (["run", "--set", "pipeline.max_batch=99999999999999999999"], "--set: pipeline.max_batch must be from 1 to 15534"),
    (["subscribe", "--connect", "garbage", "--timeout", "1"], "--connect 'garbage' is not a ZeroMQ address"),
    (["keys", "../../etc/x", "--dir", "{tmp}/d"], "key name '../../etc/x' must be a plain name"),
    (["run", "--source", "synthetic:fps=0"],
     "--source: stream 'cam0': synthetic source option 'fps=0': fps must be from 0.1 to 1000"),
    (["run", "--source", "synthetic:size=100000x100000"], "each side must be from 16 to 7680 pixels"),
    (["run", "--set", "pipeline.buffer_slack=1000000000"], "--set: a stream's ring buffer would hold 1000000040 frames"),
    (["run", "--set", "pipeline.stall_timeout_s=0"], "--set: pipeline.stall_timeout_s must be from 1 to 3600, got 0"),
    (["run", "--set", "events.event_log_max_mb=0"], "--set: events.event_log_max_mb must be from 0.001 to 1048576, got 0"),
    (["run", "--set", "events.event_log_max_mb=-1"], "--set: events.event_log_max_mb must be from 0.001 to 1048576"),
    (["run", "--curve-secret-key", "{tmp}/server.key_secret", "--curve-allowed-clients", "{tmp}/allowed",
      "--publish", "tcp://127.0.0.1:5999"],
     "--curve-allowed-clients: events.curve_allowed_clients '{tmp}/allowed' holds no public key"),
    (["run", "--hop", "0"], "--hop: pipeline.hop_frames must be from 1 to 100000, got 0"),
    (["run", "--source", "lobby.door=synthetic"], "--source: stream id 'lobby.door' may hold only letters"),
    (["run", "--publish", "garbage"], "--publish: events.publish 'garbage' is not a ZeroMQ address"),
    (["run", "--source", "bad={tmp}/zero.mp4"], "stream bad: video file '{tmp}/zero.mp4' is empty (0 bytes)"),
    (["run", "--set", "streams=[door=rtsp://cam:pw@10.0.0.7/live?token=t0k3n"],  # shown as typed, but masked
     "override 'streams=[door=rtsp://cam:***@10.0.0.7/live?token=***': the value is not valid YAML"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUTS, ids=[" ".join(argv) for argv, _ in BAD_INPUTS])
def test_bad_input_gives_one_clear_line_and_nonzero_exit(tmp_path, argv, message):
    (tmp_path / "allowed").mkdir()  # an empty folder of allowed subscribers
    (tmp_path / "zero.mp4").write_bytes(b"")
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    if argv[0] == "run":
        argv = [*RUN, *argv[1:]]
    result = run_cli(*argv, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert lines[-1].startswith("error: ") and message.replace("{tmp}", str(tmp_path)) in lines[-1], result.stderr
    assert [line for line in lines if line.startswith("error: ")] == [lines[-1]]
    assert "Traceback" not in result.stderr
    assert not [line for line in lines if line.startswith(("[ WARN", "[ERROR", "[OPENCV"))], result.stderr
    assert ":pw@" not in result.stderr and "t0k3n" not in result.stderr
    assert not (tmp_path / "d").exists()  # nothing written for a refused key name
