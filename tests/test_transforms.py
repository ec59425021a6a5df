"""Frame geometry: every source shape gives the model's crop, and fast downscaling still averages."""

import cv2
import numpy as np
import pytest

from streamrec.transforms import crop_region, fit_frame, frame_fit


@pytest.mark.parametrize("height, width", [(120, 160), (240, 320), (480, 640), (720, 1280), (1080, 1920),
                                           (1920, 1080), (100, 100), (60, 80)])
def test_fit_frame_gives_the_centre_crop_for_any_shape(height, width):
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)
    out = fit_frame(frame, short_side=112, crop_size=96)
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8


def test_fit_frame_keeps_the_centre():
    """A marker at the frame's centre lands at the crop's centre (the crop is not shifted)."""
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[340:380, 620:660] = 255
    out = fit_frame(frame, short_side=112, crop_size=96)
    rows, cols = np.nonzero(out[..., 0] > 128)
    assert abs(rows.mean() - 47.5) < 1.0 and abs(cols.mean() - 47.5) < 1.0


def test_fit_frame_matches_area_averaging_on_camera_frames():
    """Halving steps then one bilinear step stay within a few levels of a single INTER_AREA resize."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:720, 0:1280]
    frame = np.stack([(x // 5) % 256, (y // 3) % 256, ((x + y) // 7) % 256], axis=-1).astype(np.uint8)
    for _ in range(20):  # a few hard-edged objects
        top, left = rng.integers(0, 600), rng.integers(0, 1100)
        frame[top:top + 90, left:left + 150] = rng.integers(0, 256, 3)
    reference = cv2.resize(frame, (199, 112), interpolation=cv2.INTER_AREA)[8:104, 51:147]
    out = fit_frame(frame, short_side=112, crop_size=96)
    assert np.abs(out.astype(int) - reference).mean() < 3.0


def test_fit_frame_does_not_alias_fine_detail():
    """A one-pixel checkerboard must average to grey, not turn into a pattern (plain bilinear would)."""
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[::2, ::2] = frame[1::2, 1::2] = 255
    out = fit_frame(frame, short_side=112, crop_size=96).astype(int)
    assert abs(out.mean() - 127.5) < 2 and out.std() < 4
    naive = cv2.resize(frame, (199, 112), interpolation=cv2.INTER_LINEAR).astype(int)
    assert naive.std() > 40  # the check above can fail: without averaging, the pattern survives


def test_crop_region_takes_the_fractional_box():
    frame = np.arange(100 * 200 * 3, dtype=np.int64).reshape(100, 200, 3)
    out = crop_region(frame, (0.25, 0.5, 0.5, 0.25))
    assert out.shape == (25, 100, 3) and out[0, 0, 0] == frame[50, 50, 0]


@pytest.mark.parametrize("size", [(320, 240), (240, 320), (1280, 720), (100, 100)])
def test_pad_keeps_the_whole_frame_and_boxes_map_both_ways(size):
    """Per-person mode letterboxes: the whole frame, long side to the input size, centred on the
    padding colour; a white block drawn in the source is found where frame_fit maps its box."""
    width, height = size
    frame = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = width // 4, height // 3, width // 2, 2 * height // 3
    frame[y1:y2, x1:x2] = 255
    out = fit_frame(frame, 128, 128, "pad", (115, 115, 115))
    assert out.shape == (128, 128, 3)
    ys, xs = np.nonzero(out[..., 0] > 200)
    found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    mapped = frame_fit(width, height, 128, 128, "pad").to_input([[x1, y1, x2, y2]])[0]
    assert np.abs(found - mapped).max() <= 1.0  # within the resize's pixel
    back = frame_fit(width, height, 128, 128, "pad").to_source([mapped])[0]
    assert np.allclose(back, [x1, y1, x2, y2], atol=1e-3)
    # The padding is the given colour, on the short side only.
    if width > height:
        assert (out[0] == 115).all() and (out[:, 0] != 115).any()
    elif height > width:
        assert (out[:, 0] == 115).all()
