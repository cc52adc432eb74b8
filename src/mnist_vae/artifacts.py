"""Atomic writing of every artifact: a temp file in the target's folder, then a rename.

An interrupted or failed stage leaves either the previous file or none, never a half-written
one that looks valid. Temp files start with '.' and end in '.tmp' and are removed on failure.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it onto `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the final file normal permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Compressed .npz (readable by np.load), written atomically and byte-reproducibly.

    np.savez_compressed stamps each member with the current time, so the same arrays give a
    different file (and a different DVC hash) on every run; this writes the same format with a
    fixed timestamp.
    """
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, array in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(info, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)


def write_csv(path: str | Path, frame) -> None:
    """A pandas DataFrame as CSV, written atomically."""
    write_bytes(path, frame.to_csv(index=False, float_format="%.6g").encode())


def write_torch(path: str | Path, obj: Any) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def write_png(path: str | Path, image: np.ndarray) -> None:
    """A 2-d uint8 (gray) or H x W x 3 uint8 array as PNG, encoded by torchvision."""
    import torch
    from torchvision.io import encode_png

    arr = np.ascontiguousarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"write_png needs uint8 pixels, got {arr.dtype}")
    chw = torch.from_numpy(arr)[None] if arr.ndim == 2 else torch.from_numpy(arr).permute(2, 0, 1)
    write_bytes(path, encode_png(chw.contiguous()).numpy().tobytes())


def write_figure(path: str | Path, fig, **kwargs) -> None:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip("."), **kwargs)
    plt.close(fig)
