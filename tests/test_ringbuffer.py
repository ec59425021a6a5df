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


def test_a_frame_overwritten_while_being_copied_is_refused():
    """The capture thread overwrites frames halfway through a read's copy: the read must refuse the clip
    (the later half it copies is newer frames under the old indices)."""
    ring = RingBuffer(capacity=6, height=8, width=8)
    for i in range(6):
        ring.write(frame(i), float(i), float(i))
    write_now, written = threading.Event(), threading.Event()

    def capture_thread():  # the ring's one writer
        if write_now.wait(timeout=10):
            for i in range(6, 10):  # frames 6..9 land in the slots of 0..3 (3 not yet copied)
                ring.write(frame(i), float(i), float(i))
            written.set()

    class CopiedInTwoHalves(np.ndarray):
        """A read's ``out`` array that lets the writer run between the first and second half of the copy."""

        def __array_function__(self, func, types, args, kwargs):
            assert func is np.take, func
            source, slots = args[0], args[1]
            plain = self.view(np.ndarray)
            np.take(source, slots[:2], axis=0, out=plain[:2])
            write_now.set()
            assert written.wait(timeout=10), "the writer did not write"
            np.take(source, slots[2:], axis=0, out=plain[2:])
            return self

    writer = threading.Thread(target=capture_thread)
    writer.start()
    out = np.zeros((5, 8, 8, 3), np.uint8).view(CopiedInTwoHalves)
    try:
        with pytest.raises(FramesGone):
            ring.read(np.arange(1, 6), out=out)
    finally:
        write_now.set()
        writer.join(timeout=10)
    assert not writer.is_alive()
    assert out[2, 0, 0, 0] == 9  # what the read would have returned as frame 3 had it not checked


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
