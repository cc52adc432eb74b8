"""Animated GIFs of training frames that fit a byte budget, checked by decoding them again.

A frame is shown with `levels` evenly spaced grey levels. From the second frame on, a pixel
keeps the value already on screen while the new 8-bit value is within `tolerance` of it; only
the pixels that change are written, the rest are the transparent index (disposal 1: leave the
previous frame in place), cropped to the bounding box of the change. :data:`LADDER` lists
(levels, tolerance) from best to smallest; :func:`encode_within` takes the first rung whose
file fits the budget, decodes it with Pillow's reader and checks the frame count, the timing
and the worst per-frame PSNR against the 8-bit frames, so the encoder cannot drift from what
a viewer shows unnoticed.

The frames go through Pillow's own GIF encoder (`GifImagePlugin.getheader` / `getdata`), one
frame at a time: Pillow's save_all merges a frame identical to the previous one into it (adding
their durations), which would change the frame count of a GIF whose late frames are static.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import GifImagePlugin, Image

from ..io.errors import DataError

# (grey levels, tolerance in 8-bit units), best first. Measured on the 2-d model's manifold
# frames (README, GIFs): size falls and the worst PSNR with it, rung by rung.
LADDER: tuple[tuple[int, int], ...] = (
    (255, 0), (127, 2), (63, 3), (47, 5), (31, 7), (27, 8), (23, 9), (19, 10),
)


@dataclass(frozen=True)
class Encoded:
    data: bytes
    levels: int
    tolerance: int
    frames: int
    worst_psnr_db: float

    def summary(self, seconds_per_frame: float) -> dict:
        return {"bytes": len(self.data), "frames": self.frames, "seconds_per_frame": seconds_per_frame,
                "grey_levels": self.levels, "tolerance": self.tolerance,
                "worst_psnr_db": round(self.worst_psnr_db, 2)}


def shown_levels(frames: np.ndarray, levels: int, tolerance: int) -> np.ndarray:
    """T x H x W level indices as a viewer shows them: each frame rounded to `levels` greys,
    a pixel holding its shown value while the new value is within `tolerance` of it."""
    if not 2 <= levels <= 255:
        raise ValueError(f"levels must be 2..255 (one palette entry stays transparent), got {levels}")
    step = 255 / (levels - 1)
    raw = frames.astype(np.float32)
    rounded = np.rint(raw / step).astype(np.uint8)
    shown = np.empty_like(rounded)
    shown[0] = rounded[0]
    for t in range(1, len(frames)):
        keep = np.abs(raw[t] - shown[t - 1] * np.float32(step)) <= tolerance
        shown[t] = np.where(keep, shown[t - 1], rounded[t])
    return shown


def _palette_image(indices: np.ndarray, palette: list[int]) -> Image.Image:
    im = Image.fromarray(np.ascontiguousarray(indices), "P")
    im.putpalette(palette)
    return im


def encode(shown: np.ndarray, levels: int, milliseconds: int) -> bytes:
    """A looping GIF of level-index frames (from :func:`shown_levels`); index `levels` is
    transparent. Each frame after the first carries only the changed pixels."""
    greys = np.rint(np.arange(levels) * (255 / (levels - 1))).astype(int)
    palette = [int(v) for g in greys for v in (g, g, g)] + [0, 0, 0]
    transparent = levels
    first = _palette_image(shown[0], palette)
    header, _ = GifImagePlugin.getheader(first, info={"loop": 0, "duration": milliseconds,
                                                      "transparency": transparent})
    chunks = list(header)
    frame_params = {"duration": milliseconds, "disposal": 1, "transparency": transparent}
    chunks += GifImagePlugin.getdata(first, (0, 0), **frame_params)
    for t in range(1, len(shown)):
        changed = shown[t] != shown[t - 1]
        rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        if len(rows) == 0:  # nothing changed: one transparent pixel keeps the frame and its delay
            patch, offset = np.full((1, 1), transparent, np.uint8), (0, 0)
        else:
            box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
            patch = np.where(changed[box], shown[t][box], np.uint8(transparent)).astype(np.uint8)
            offset = (int(cols[0]), int(rows[0]))
        chunks += GifImagePlugin.getdata(_palette_image(patch, palette), offset, **frame_params)
    chunks.append(b";")
    return b"".join(chunks)


def decode(data: bytes) -> tuple[np.ndarray, list[int]]:
    """The frames (T x H x W uint8 grey, as composited by Pillow's reader) and their delays in
    milliseconds."""
    im = Image.open(io.BytesIO(data))
    frames, delays = [], []
    for i in range(im.n_frames):
        im.seek(i)
        frames.append(np.asarray(im.convert("L")))
        delays.append(im.info.get("duration"))
    return np.stack(frames), delays


def psnr_db(decoded: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Per-frame PSNR (dB) of decoded against the 8-bit frames; inf where identical."""
    err = decoded.astype(np.float64) - frames.astype(np.float64)
    mse = (err ** 2).reshape(len(frames), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(255.0 ** 2 / mse)


def check(data: bytes, frames: np.ndarray, milliseconds: int) -> float:
    """Decode `data`; the worst per-frame PSNR, after checking frame count and delays."""
    decoded, delays = decode(data)
    if decoded.shape != frames.shape:
        raise DataError(f"GIF check: decoded {decoded.shape} frames, wrote {frames.shape}")
    if any(d != milliseconds for d in delays):
        raise DataError(f"GIF check: frame delays {sorted(set(delays))} ms, wrote {milliseconds} ms")
    return float(psnr_db(decoded, frames).min())


def encode_within(frames: np.ndarray, seconds_per_frame: float, max_bytes: int,
                  min_psnr_db: float) -> Encoded:
    """The best :data:`LADDER` rung whose GIF fits in `max_bytes`, decoded and checked.

    DataError (naming the params to change) when even the last rung is too large, or when the
    decoded frames are worse than `min_psnr_db`."""
    if len(frames) == 0:
        raise DataError("no frames selected (check the gifs params' start/stop/step)")
    frames = np.asarray(frames, dtype=np.uint8)
    milliseconds = round(seconds_per_frame * 100) * 10  # GIF delays are in hundredths of a second
    size = 0
    for levels, tolerance in LADDER:
        data = encode(shown_levels(frames, levels, tolerance), levels, milliseconds)
        size = len(data)
        if size <= max_bytes:
            break
    else:
        raise DataError(f"{len(frames)} frames need {size / 1e6:.2f} MB even at {levels} grey levels "
                        f"(tolerance {tolerance}), over gifs.max_mb = {max_bytes / 1e6:g}; raise it, "
                        f"or select fewer frames (the gifs params' step)")
    worst = check(data, frames, milliseconds)
    if worst < min_psnr_db:
        raise DataError(f"GIF check: worst frame PSNR {worst:.1f} dB is under gifs.min_psnr_db = "
                        f"{min_psnr_db:g} ({levels} grey levels, tolerance {tolerance})")
    return Encoded(data, levels, tolerance, len(frames), worst)


def select_frames(frames: np.ndarray, span: Any) -> np.ndarray:
    """frames[start:stop:step] of a GIF span (params gifs.*)."""
    return frames[slice(span.start, span.stop, span.step)]
