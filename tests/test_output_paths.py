"""Paths the user names for output: every writer goes through `streamrec.errors.check_output_path`.

A device, FIFO or folder where a file is to be written is refused, never replaced or written
into; a URL given to a flag that takes a local path is refused with its password masked (it
used to become local folders named after the URL); the annotated video's writer is opened
before the run; the event log's rotation never renames what is not one of its files.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from types import SimpleNamespace

import pytest

from conftest import REPO, cli, run_cli, write_video
from streamrec.errors import StreamrecError, check_output_path

SECRET = "hunter2"


def run_in(folder, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real CLI with ``folder`` as the working directory: a URL taken for a path lands there."""
    return subprocess.run(cli(*args), cwd=folder, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})


def assert_one_line(result: subprocess.CompletedProcess, message: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip() and " INFO " not in line]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and SECRET not in result.stderr, result.stderr
    assert lines and lines[-1].startswith("error: ") and message in lines[-1], result.stderr
    assert [line for line in lines if line.startswith("error: ")] == [lines[-1]], result.stderr
    return lines[-1]


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def is_fifo(path) -> bool:
    return stat.S_ISFIFO(os.lstat(path).st_mode)


# --------------------------------------------------------------------------- the shared check


@pytest.mark.parametrize("target, flag, message", [
    ("/dev/null", "--output", "cannot write --output /dev/null: it is a device, not a regular file"),
    ("{fifo}", "--event-log", "it is a FIFO (named pipe), not a regular file"),
    ("{tmp}", "--json", "cannot write --json {tmp}: it is a folder; give a file name (e.g. {tmp}/report.json)"),
    ("{tmp}/a_file/x.onnx", "--output", "cannot write --output {tmp}/a_file/x.onnx: {tmp}/a_file is not a folder"),
    (f"ftp://u:{SECRET}@host/x.onnx", "--output", "--output ftp://u:***@host/x.onnx is a URL, but --output takes a "
                                                  "local file only"),
    (f"s3://key:{SECRET}@bucket/keys", "--dir", "--dir s3://key:***@bucket/keys is a URL"),
    (f"rtsp://cam:{SECRET}@10.0.0.7/x.mp4", "--output-video", "rtsp://cam:***@10.0.0.7/x.mp4 is a URL"),
    ("{tmp}/a_file", "--dir", "cannot write into --dir {tmp}/a_file: it is not a folder"),
])
def test_check_output_path_refuses_what_is_no_place_for_a_file(tmp_path, fifo, target, flag, message):
    (tmp_path / "a_file").write_text("a file")
    target = target.format(tmp=tmp_path, fifo=fifo)
    with pytest.raises(StreamrecError) as caught:
        check_output_path(target, flag, folder=flag == "--dir")
    assert message.format(tmp=tmp_path) in str(caught.value) and SECRET not in str(caught.value)


def test_check_output_path_lets_files_folders_and_new_paths_through(tmp_path):
    (tmp_path / "old.onnx").write_bytes(b"old")
    (tmp_path / "link.onnx").symlink_to(tmp_path / "old.onnx")
    for path in ("old.onnx", "link.onnx", "new/deeper/x.onnx"):
        assert check_output_path(tmp_path / path, "--output") == tmp_path / path
    assert check_output_path(tmp_path, "--dir", folder=True) == tmp_path
    assert check_output_path(tmp_path / "new_folder", "--dir", folder=True) == tmp_path / "new_folder"
    assert not (tmp_path / "new").exists() and not (tmp_path / "new_folder").exists(), "it checks, it creates nothing"


# --------------------------------------------------------------------------- export --output


def test_write_atomically_never_replaces_a_fifo_or_a_device(tmp_path, fifo):
    from streamrec.backends.engine_cache import write_atomically

    null_link = tmp_path / "null.onnx"
    null_link.symlink_to("/dev/null")  # /dev/null itself only through a link: the test must not replace it
    for target in (fifo, null_link):
        with pytest.raises(StreamrecError, match="not a regular file"):
            write_atomically(target, b"graph")
    assert is_fifo(fifo) and os.readlink(null_link) == "/dev/null"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null.onnx", "pipe"], "no temporary file left behind"


def test_export_refuses_a_fifo_a_folder_and_a_url_before_the_model_loads(tmp_path, fifo):
    result = run_in(tmp_path, "export", "--output", str(fifo))
    assert_one_line(result, f"cannot write --output {fifo}: it is a FIFO")
    assert is_fifo(fifo), "the FIFO was replaced by the ONNX file"
    assert_one_line(run_in(tmp_path, "export", "--output", str(tmp_path)), "it is a folder; give a file name")
    result = run_in(tmp_path, "export", "--output", f"ftp://u:{SECRET}@h/x.onnx")
    assert_one_line(result, "--output ftp://u:***@h/x.onnx is a URL, but --output takes a local file only")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"], "no folder named after the URL"


# --------------------------------------------------------------------------- keys --dir


def test_keys_dir_refuses_a_url_and_a_file(tmp_path):
    result = run_in(tmp_path, "keys", "server", "--dir", f"s3://key:{SECRET}@bucket/keys")
    assert_one_line(result, "--dir s3://key:***@bucket/keys is a URL, but --dir takes a local folder only")
    (tmp_path / "a_file").write_text("a file")
    assert_one_line(run_in(tmp_path, "keys", "server", "--dir", "a_file"), "--dir a_file: it is not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"], "no folder named after the URL"


# --------------------------------------------------------------------------- bench reports


def test_bench_report_files_are_checked_and_never_written_into_a_device(tmp_path, fifo):
    from streamrec.bench import report

    null_link = tmp_path / "null.json"
    null_link.symlink_to("/dev/null")
    with pytest.raises(StreamrecError, match="cannot write --json .*: it is a device"):
        report.write_json({"benchmark": "x"}, null_link)
    with pytest.raises(StreamrecError, match="cannot write --markdown .*: it is a FIFO"):
        report.update_markdown(fifo, "key", "section")  # used to block forever, waiting for a reader
    with pytest.raises(StreamrecError, match=r"--plot ftp://u:\*\*\*@h/p.png is a URL"):
        report.check_report_paths(SimpleNamespace(json=str(tmp_path / "ok.json"), markdown=None,
                                                  plot=f"ftp://u:{SECRET}@h/p.png"))
    report.check_report_paths(SimpleNamespace(json=str(tmp_path / "ok.json"), markdown=str(tmp_path / "B.md")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null.json", "pipe"]


# --------------------------------------------------------------------------- run: --output-video, --timeline


def test_output_video_opencv_cannot_write_is_one_line_before_the_model_loads(tmp_path):
    """/proc passes every permission check as root, but no file can be made there: it was a
    traceback from the drawing thread after the run had started, and exit status 0."""
    video = write_video(tmp_path / "clip.mp4", frames=8)
    result = run_cli("run", "--source", str(video), "--publish", "none", "--quiet", "--output-video",
                     "/proc/streamrec-output-test.mp4", timeout=60)
    assert_one_line(result, "cannot write --output-video /proc/streamrec-output-test.mp4: OpenCV cannot open")
    assert "engine backend" not in result.stderr, "checked before the model is loaded"
    assert not [line for line in result.stderr.splitlines() if line.startswith(("[ WARN", "[ERROR"))], result.stderr


def test_output_video_probe_leaves_nothing_behind_and_keeps_an_existing_video(tmp_path):
    from streamrec.visualize import check_video_writer

    existing = tmp_path / "out.mp4"
    existing.write_bytes(b"an earlier video")
    check_video_writer(existing, "--output-video")
    assert existing.read_bytes() == b"an earlier video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"], "the probe file is removed"


@pytest.mark.parametrize("flag, value, message", [
    ("--output-video", f"rtsp://cam:{SECRET}@10.0.0.7/live.mp4", "--output-video rtsp://cam:***@10.0.0.7/live.mp4 "
                                                                 "is a URL"),
    ("--timeline", f"https://u:{SECRET}@example.com/t.png", "--timeline https://u:***@example.com/t.png is a URL"),
    ("--output-video", "{fifo}.mp4", "it is a FIFO (named pipe), not a regular file"),
])
def test_run_visual_outputs_refuse_urls_and_special_files(tmp_path, flag, value, message):
    video = write_video(tmp_path / "clip.mp4", frames=8)
    os.mkfifo(tmp_path / "pipe.mp4")
    result = run_in(tmp_path, "run", "--source", str(video), "--publish", "none", "--quiet", flag,
                    value.format(fifo=tmp_path / "pipe"), timeout=60)
    assert_one_line(result, message)
    assert "engine backend" not in result.stderr, "checked before the model is loaded"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "pipe.mp4"], "no folder named after the URL"


# --------------------------------------------------------------------------- the event log


def test_event_log_refuses_a_url_a_fifo_and_a_rotated_part_that_is_a_folder(tmp_path, fifo):
    from streamrec.events import JsonlLog

    with pytest.raises(StreamrecError, match=r"--event-log http://u:\*\*\*@h/e.jsonl is a URL"):
        JsonlLog(f"http://u:{SECRET}@h/e.jsonl", max_bytes=2000)
    with pytest.raises(StreamrecError, match="it is a FIFO"):
        JsonlLog(fifo, max_bytes=2000)  # opening it for appending used to wait for a reader
    (tmp_path / "events.jsonl.2").mkdir()
    (tmp_path / "events.jsonl.2" / "mine.txt").write_text("the user's")
    with pytest.raises(StreamrecError, match=r"its rotated part .*events.jsonl.2 is a folder, which rotation would "
                                             r"rename; move it away or choose another --event-log path"):
        JsonlLog(tmp_path / "events.jsonl", max_bytes=2000, keep=1)
    assert (tmp_path / "events.jsonl.2" / "mine.txt").read_text() == "the user's"
    assert not (tmp_path / "events.jsonl").exists() and not (tmp_path / "http:").exists()


def test_event_log_part_that_becomes_a_folder_mid_run_stops_rotation_and_loses_no_event(tmp_path, caplog):
    from streamrec.events import EventBus, JsonlLog

    path = tmp_path / "events.jsonl"
    log = JsonlLog(path, max_bytes=2000, keep=1)
    bus = EventBus([log])
    for index in range(10):
        bus.emit("status", "cam0", state="live", detail=f"event {index}")
    (tmp_path / "events.jsonl.1").unlink(missing_ok=True)
    (tmp_path / "events.jsonl.1").mkdir()  # taken by a folder after the start
    for index in range(10, 60):
        bus.emit("status", "cam0", state="live", detail=f"event {index}")
    bus.close()
    assert (tmp_path / "events.jsonl.1").is_dir()
    seqs = [json.loads(line)["seq"] for line in path.read_text().splitlines()]
    assert seqs == list(range(seqs[0], 60)), "every event after the last rotation is in the log"
    assert [r for r in caplog.records if "rotation stops" in r.getMessage()], "said once"
    assert len([r for r in caplog.records if "rotation stops" in r.getMessage()]) == 1


def test_run_event_log_refuses_a_url_without_making_folders(tmp_path):
    video = write_video(tmp_path / "clip.mp4", frames=8)
    result = run_in(tmp_path, "run", "--source", str(video), "--publish", "none", "--quiet", "--event-log",
                    f"http://u:{SECRET}@logs.example.com/events.jsonl", timeout=120)
    assert_one_line(result, "--event-log http://u:***@logs.example.com/events.jsonl is a URL")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"], "no folder named after the URL"


@pytest.mark.parametrize("argv, message", [
    (["eval", "--json", "{fifo}", "--count", "1", "--minutes", "0.1"], "cannot write --json {fifo}: it is a FIFO"),
    (["train", "--out", "{tmp}/a_file", "--epochs", "1"], "cannot write into --out {tmp}/a_file: it is not a folder"),
    (["train", "--stream-from", "slowfast_tiny", "--out", "{tmp}/a_file"],
     "cannot write into --out {tmp}/a_file: it is not a folder"),
    (["train", "--person-detector", "--out", f"s3://k:{SECRET}@bucket/det"],
     "--out s3://k:***@bucket/det is a URL, but --out takes a local folder only"),
    (["bench", "engine", "--json", f"https://u:{SECRET}@h/r.json"], "--json https://u:***@h/r.json is a URL"),
    (["cluster", "--source", "synthetic", "--report", "{fifo}"], "cannot write --report {fifo}: it is a FIFO"),
    (["run", "--publish", "none", "--quiet", "--event-log", "{tmp}"], "cannot write --event-log {tmp}: it is a folder"),
])
def test_commands_check_their_output_paths_before_anything_runs(tmp_path, fifo, argv, message):
    """Each command refuses where it cannot write before it trains, benchmarks, generates videos or
    starts a cluster (each of these used to get that far, or write into the device, FIFO or URL)."""
    (tmp_path / "a_file").write_text("the user's")
    argv = [arg.replace("{tmp}", str(tmp_path)).replace("{fifo}", str(fifo)) for arg in argv]
    result = run_in(tmp_path, *argv, timeout=60)
    assert_one_line(result, message.replace("{tmp}", str(tmp_path)).replace("{fifo}", str(fifo)))
    assert (tmp_path / "a_file").read_text() == "the user's" and is_fifo(fifo)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "pipe"], "nothing made"
