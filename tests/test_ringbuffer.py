import threading

import numpy as np
import pytest

from streamrec.ringbuffer import FramesGone, RingBuffer


def frame(value: int, size: int = 8) -> np.ndarray:
    return np.full((size, size, 3), value % 256, np.uint8)


def test_reads_frames_by_absolute_index_with_their_timestamps():
    ring = RingBuffer(capacity=4, height=8, width=8)
    for i in range(6):
        ring.write(frame(i), capture_time=100.0 + i, media_time=i / 30)
    frames = ring.read(np.array([3, 5]))
    assert frames.pixels[:, 0, 0, 0].tolist() == [3, 5]
    assert frames.capture_times.tolist() == [103.0, 105.0]
    assert frames.media_times.tolist() == pytest.approx([3 / 30, 5 / 30])
    assert ring.nbytes == 4 * 8 * 8 * 3 + 2 * 4 * 8
    row = np.zeros((2, 8, 8, 3), np.uint8)  # e.g. a batch array's row: the frames land there, copied once
    assert ring.read(np.array([5, 4]), out=row).pixels is row and row[:, 0, 0, 0].tolist() == [5, 4]


def test_overwritten_and_future_frames_are_refused():
    ring = RingBuffer(capacity=4, height=8, width=8)
    for i in range(6):
        ring.write(frame(i), 0.0, 0.0)
    # Slots hold 2..5, but the slot of the next write (6 -> slot of 2) counts as being overwritten.
    assert ring.oldest_readable() == 3
    with pytest.raises(FramesGone):
        ring.read(np.array([2]))
    with pytest.raises(FramesGone):
        ring.read(np.array([6]))


def test_concurrent_reader_never_sees_a_torn_frame():
    """A writer races a reader; every frame returned must be uniformly its own index's value."""
    size = 64
    ring = RingBuffer(capacity=6, height=size, width=size)
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            ring.write(np.full((size, size, 3), i % 251, np.uint8), float(i), float(i))
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    checked = refused = 0
    try:
        while checked < 3000:
            head = ring.head
            wanted = np.arange(max(0, head - 5), head)
            if wanted.size == 0:
                continue
            try:
                frames = ring.read(wanted)
            except FramesGone:
                refused += 1
                continue
            for pixels, index in zip(frames.pixels, frames.indices):
                assert (pixels == index % 251).all(), f"torn frame {index}"
                checked += 1
    finally:
        stop.set()
        thread.join()
    assert checked >= 3000


def test_offline_writer_waits_until_frames_are_released():
    ring = RingBuffer(capacity=4, height=2, width=2)
    for i in range(3):
        assert ring.wait_for_room(timeout=0.01)
        ring.write(frame(i, 2), 0.0, 0.0)
    # Writing frame 3 would put its neighbour slot (frame 0's) under the writer next: frame 0,
    # still needed, would stop being readable.
    assert not ring.wait_for_room(timeout=0.01)
    assert ring.read(np.array([0])).indices.tolist() == [0]
    ring.release(1)
    assert ring.wait_for_room(timeout=0.01)
