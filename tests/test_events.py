"""Events a subscriber can trust: a publisher id per process and an event_id per event, a
subscriber that reports a missed start and checks gaps per publisher, an event log that keeps
every part unless capped."""

from __future__ import annotations

import json
import subprocess

import pytest
import zmq

from conftest import REPO, cli, run_cli
from streamrec.config import load_config
from streamrec.errors import StreamrecError
from streamrec.events import EventBus, JsonlLog, MemorySink, SequenceCheck


def test_every_event_names_its_publisher_and_a_stable_event_id():
    first, second = MemorySink(), MemorySink()
    bus, other = EventBus([first]), EventBus([second])
    for _ in range(3):
        bus.emit("status", "cam0", state="live")
    other.emit("status", "cam0", state="live")
    events = first.events()
    assert len(bus.publisher) == 12 and bus.publisher != other.publisher  # a fresh id per bus
    assert [e["publisher"] for e in events] == [bus.publisher] * 3
    assert [e["event_id"] for e in events] == [f"{bus.publisher}:{seq}" for seq in (0, 1, 2)]
    assert second.events()[0]["event_id"] == f"{other.publisher}:0"
    assert json.loads(first.received[0].payload)["event_id"] == f"{bus.publisher}:0"  # on the wire too


def test_a_run_has_a_new_publisher_at_each_start(tmp_path, video_file):
    publishers = []
    for attempt in range(2):
        log_path = tmp_path / f"events{attempt}.jsonl"
        result = run_cli("run", "--source", str(video_file), "--publish", "none", "--quiet", "--event-log",
                         str(log_path), "--set", "pipeline.hop_frames=30")
        assert result.returncode == 0, result.stderr
        events = [json.loads(line) for line in log_path.read_text().splitlines()]
        assert len({e["publisher"] for e in events}) == 1
        assert [e["event_id"] for e in events] == [f"{e['publisher']}:{e['seq']}" for e in events]
        publishers.append(events[0]["publisher"])
    assert publishers[0] != publishers[1]


def event(publisher, seq):
    fields = {"schema": 1, "type": "status", "stream": "s", "seq": seq, "time": "2026-01-01T00:00:00Z"}
    return {**fields, **({"publisher": publisher, "event_id": f"{publisher}:{seq}"} if publisher else {})}


def test_sequence_check_tells_a_fresh_publisher_from_a_missed_start_and_checks_each_publisher():
    check = SequenceCheck()
    notes = [check.check(event(p, seq)) for p, seq in
             [("a", 0), ("b", 7), ("a", 1), ("b", 8), ("a", 4), ("b", 9), ("b", 9), ("a", 5)]]
    assert notes[0] == ["publisher a started"]
    assert notes[1] == ["missed start from publisher b: its first event here is seq 7; events 0..6 were published "
                        "before this subscriber joined (the event log has them)"]
    assert notes[2] == notes[3] == notes[5] == notes[7] == []  # interleaved publishers are no gap
    assert notes[4] == ["gap: events 2..3 missing from publisher a (2 lost so far)"]
    assert notes[6] == ["repeat: event 9 from publisher b again (de-duplicate by event_id)"]
    assert (check.lost, check.missed_start, check.repeated) == (2, 7, 1)
    assert {p: (r.first_seq, r.next_seq, r.received, r.lost) for p, r in check.publishers.items()} == {
        "a": (0, 6, 4, 2), "b": (7, 10, 4, 0)}


def test_sequence_check_keeps_one_sequence_for_events_without_a_publisher():
    check = SequenceCheck()
    assert check.check(event(None, 0)) == []
    assert check.check(event(None, 3)) == ["gap: events 1..2 missing (2 lost so far)"]


def subscribe_to(publisher_socket, *args):
    """``subscribe`` as a process, once its subscription has reached ``publisher_socket`` (an XPUB)."""
    address = publisher_socket.getsockopt_string(zmq.LAST_ENDPOINT)
    process = subprocess.Popen(cli("subscribe", "--connect", address, *args), cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    while True:  # an earlier subscriber's unsubscription may come first
        assert publisher_socket.poll(20_000), "no subscription came"
        if publisher_socket.recv()[:1] == b"\x01":
            return process


@pytest.fixture
def xpub():
    socket = zmq.Context.instance().socket(zmq.XPUB)
    socket.setsockopt(zmq.XPUB_VERBOSER, 1)
    socket.bind("tcp://127.0.0.1:*")
    yield socket
    socket.close(0)


def test_subscribe_reports_a_missed_start_and_gaps_per_publisher(xpub):
    process = subscribe_to(xpub, "--count", "6", "--timeout", "20")
    try:
        for publisher, seq in [("aaaa", 11), ("bbbb", 0), ("aaaa", 12), ("bbbb", 1), ("bbbb", 3), ("aaaa", 13)]:
            xpub.send_multipart([b"s.status", json.dumps(event(publisher, seq)).encode()])
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert len(stdout.splitlines()) == 6
    assert "missed start from publisher aaaa: its first event here is seq 11; events 0..10" in stderr
    assert "publisher bbbb started" in stderr
    assert "gap: events 2..2 missing from publisher bbbb (1 lost so far)" in stderr
    assert "6 events received from 2 publishers, 1 lost, 11 published before this subscriber joined" in stderr


def test_subscribe_expecting_events_fails_when_none_arrive(xpub):
    process = subscribe_to(xpub, "--timeout", "1", "--expect-events")
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 1 and stdout == ""
    assert "no event for 1 s (0 received)" in stderr
    # Without --expect-events, silence is not a failure (as before).
    process = subscribe_to(xpub, "--timeout", "1")
    assert process.wait(timeout=30) == 0


# --------------------------------------------------------------------------- the event log


def fill_log(path, events, keep=None):
    log = JsonlLog(path, max_bytes=2000) if keep is None else JsonlLog(path, max_bytes=2000, keep=keep)
    bus = EventBus([log])
    for index in range(events):
        bus.emit("status", "cam0", state="live", detail=f"event {index}")
    bus.close()


def read_parts(folder):
    """Every part of the log, oldest first: events.jsonl.N ... events.jsonl.1, events.jsonl."""
    parts = sorted(folder.glob("events.jsonl*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    return parts, [json.loads(line)["seq"] for part in parts for line in part.read_text().splitlines()]


def test_event_log_rotation_keeps_every_part_by_default(tmp_path):
    fill_log(tmp_path / "events.jsonl", 300)
    parts, seqs = read_parts(tmp_path)
    assert len(parts) > 10  # far past the 5 parts rotation used to keep
    assert seqs == list(range(300))
    # A run that starts again appends to the log and rotates on, still deleting nothing.
    fill_log(tmp_path / "events.jsonl", 50)
    assert read_parts(tmp_path)[1] == list(range(300)) + list(range(50))


def test_event_log_keep_caps_the_rotated_parts_and_deletes_only_the_oldest(tmp_path):
    fill_log(tmp_path / "events.jsonl", 300, keep=3)
    parts, seqs = read_parts(tmp_path)
    assert [p.name for p in parts] == ["events.jsonl.3", "events.jsonl.2", "events.jsonl.1", "events.jsonl"]
    assert seqs == list(range(300))[-len(seqs):]  # the newest events, none missing between them


def test_event_log_keep_is_checked():
    assert load_config("slowfast_tiny").events.event_log_keep is None  # by default every part is kept
    assert load_config("slowfast_tiny", ["events.event_log_keep=4"]).events.event_log_keep == 4
    assert load_config("slowfast_tiny", ["events.event_log_keep=null"]).events.event_log_keep is None
    for bad in ("0", "-1"):
        with pytest.raises(StreamrecError, match=f"events.event_log_keep must be from 1 to 1000000, got {bad}"):
            load_config("slowfast_tiny", [f"events.event_log_keep={bad}"])
