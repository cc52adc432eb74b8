"""GIF encoding under a byte budget (mnist_vae.viz.gifs): what a viewer decodes is what was meant."""

import io
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import params_with
from PIL import Image

from mnist_vae.io import artifacts
from mnist_vae.io.errors import DataError
from mnist_vae.viz import gifs
from mnist_vae.viz.figures import upscale


def drifting_frames(t=12, side=40, seed=0):
    """Smooth images that drift a little each frame, like a decoder during training."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side] / side
    out = []
    for k in range(t):
        phase = k * 0.15 + rng.normal(0, 0.02)
        img = 0.5 + 0.5 * np.sin(6 * xx + phase) * np.cos(4 * yy - phase)
        out.append(np.clip(img * 255 + rng.normal(0, 3, img.shape), 0, 255))
    return np.rint(np.stack(out)).astype(np.uint8)


def test_psnr_of_a_known_error():
    a = np.full((2, 4, 4), 100, np.uint8)
    b = a.copy()
    b[0] += 1  # MSE 1: 10 log10(255^2) = 48.13 dB
    assert gifs.psnr_db(b, a)[0] == pytest.approx(48.1308, abs=1e-4)
    assert gifs.psnr_db(b, a)[1] == np.inf


@pytest.mark.parametrize("levels, tolerance", gifs.LADDER)
def test_every_rung_decodes_within_its_error_bound_with_frames_and_delays_kept(levels, tolerance):
    frames = drifting_frames()
    data = gifs.encode(gifs.shown_levels(frames, levels, tolerance), levels, 70)
    decoded, delays = gifs.decode(data)
    assert decoded.shape == frames.shape and delays == [70] * len(frames)
    bound = max(tolerance, 255 / (levels - 1) / 2) + 0.5  # hold tolerance or rounding, plus the 8-bit palette
    assert np.abs(decoded.astype(int) - frames.astype(int)).max() <= bound


def test_the_first_rung_is_nearly_lossless():
    frames = drifting_frames()
    data = gifs.encode(gifs.shown_levels(frames, 255, 0), 255, 50)
    assert np.abs(gifs.decode(data)[0].astype(int) - frames.astype(int)).max() <= 1


def test_static_frames_keep_their_count_where_pillow_would_merge_them():
    frames = np.repeat(drifting_frames(t=1), 6, axis=0)
    gif = gifs.encode_within(frames, 0.1, 10**6, 35)
    decoded, delays = gifs.decode(gif.data)
    assert len(decoded) == 6 and delays == [100] * 6
    # why gifs.encode writes frame by frame: Pillow's save_all folds repeated frames into one
    ims = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=100, loop=0)
    assert Image.open(buf).n_frames == 1


def test_the_budget_picks_the_best_rung_that_fits():
    frames = drifting_frames(t=20, side=80)
    sizes = [len(gifs.encode(gifs.shown_levels(frames, lv, tol), lv, 50)) for lv, tol in gifs.LADDER]
    assert sizes == sorted(sizes, reverse=True)  # the ladder goes down in size
    best = gifs.encode_within(frames, 0.05, sizes[0], 30)
    assert (best.levels, best.tolerance) == gifs.LADDER[0]
    third = gifs.encode_within(frames, 0.05, sizes[2], 30)
    assert (third.levels, third.tolerance) == gifs.LADDER[2] and len(third.data) == sizes[2]
    assert best.worst_psnr_db > third.worst_psnr_db > 30


def test_a_budget_nothing_fits_names_the_param():
    with pytest.raises(DataError, match=r"over gifs.max_mb = 0.0001; raise it"):
        gifs.encode_within(drifting_frames(), 0.05, 100, 30)


def test_a_decoded_gif_worse_than_the_floor_names_the_param():
    with pytest.raises(DataError, match=r"worst frame PSNR .* under gifs.min_psnr_db = 99"):
        gifs.encode_within(drifting_frames(), 0.05, 10**6, 99)


def test_a_gif_that_decodes_to_other_frames_is_caught():
    frames = drifting_frames()
    data = gifs.encode(gifs.shown_levels(frames, 63, 3), 63, 50)
    assert gifs.check(data, frames, 50) > 40
    with pytest.raises(DataError, match="frame delays"):
        gifs.check(data, frames, 60)
    with pytest.raises(DataError, match="decoded"):
        gifs.check(data, frames[:-1], 50)
    assert gifs.check(data, 255 - frames, 50) < 15  # the PSNR sees a wrong picture


def test_gif_frame_count_duration_and_loop(tmp_path):
    stack = np.random.default_rng(0).integers(0, 256, size=(23, 10, 12), dtype=np.uint8)
    spec = SimpleNamespace(start=0, stop=None, step=5)
    gif = gifs.encode_within(upscale(gifs.select_frames(stack, spec), 2), 0.05, 10**6, 35)
    artifacts.write_bytes(tmp_path / "a.gif", gif.data)
    back = iio.imread(tmp_path / "a.gif", index=None)
    assert back.shape[0] == 5 and back.shape[1:3] == (20, 24)
    with Image.open(tmp_path / "a.gif") as im:
        assert im.n_frames == 5 and im.info["loop"] == 0
        durations = []
        for k in range(im.n_frames):
            im.seek(k)
            durations.append(im.info["duration"])
    assert durations == [50] * 5
    assert iio.immeta(tmp_path / "a.gif")["duration"] == 50


def test_reference_gif_frame_counts():
    stack = np.zeros((470, 1, 1), dtype=np.uint8)  # 1 + ceil(4690 / 10) frames of a 10-epoch run
    spans = params_with().gifs
    assert len(gifs.select_frames(stack, spans.manifold_all)) == 94
    assert len(gifs.select_frames(stack, spans.manifold_early)) == 100
    assert len(gifs.select_frames(stack, spans.reconstruction_all)) == 94
    assert len(gifs.select_frames(stack, spans.reconstruction_early)) == 150
