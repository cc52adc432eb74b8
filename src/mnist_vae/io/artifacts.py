"""Reading and writing every artifact.

Writing is atomic: a temp file in the target's folder, then a rename, so an interrupted or
failed stage leaves either the previous file or none, never a half-written one that looks
valid. Temp files start with '.' and end in '.tmp' and are removed on failure.

Reading goes through :func:`read_npz` and :func:`read_checkpoint`: a missing, truncated or
unexpected file raises DataError naming the file and the command that restores it (the stage
that writes it is looked up in dvc.yaml), never a traceback from inside numpy or torch.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import re
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import yaml

from . import yamlfile
from .errors import DataError, MachineFault


# What the machine, not the project, got wrong when a write fails, and what to do about it
FAULTS = {
    errno.ENOSPC: "the disk is full: free some space",
    errno.EDQUOT: "the disk quota is used up: free some space",
    errno.EFBIG: "the file is larger than this shell's file-size limit (ulimit -f): raise it",
    errno.EROFS: "the folder is on a read-only file system: make it writable or work in a writable clone",
    errno.EACCES: "no permission to write there: check the folder's owner and mode",
    errno.EPERM: "no permission to write there: check the folder's owner and mode",
}


def fault(path: str | Path, exc: OSError) -> "MachineFault | None":
    """A one-line MachineFault for a write of `path` that the machine refused, else None."""
    why = FAULTS.get(exc.errno)
    if why is None:
        return None
    return MachineFault(f"could not write {path}: {exc.strerror or os.strerror(exc.errno)}; {why}, then rerun. "
                        "Nothing was half-written, and no file tracked in git was removed (docs/dvc.md#"
                        "after-a-failed-stage)")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it onto `path`, else delete it. A write
    the machine refuses (full disk, file-size limit, read-only folder, permission) becomes a
    one-line MachineFault naming `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise (fault(path, exc) or exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the final file normal permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        refused = fault(path, exc) if isinstance(exc, OSError) and not isinstance(exc, MachineFault) else None
        if refused is not None:
            raise refused from None
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def non_finite(obj: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted key, value) of every NaN or infinite float in a JSON-like object."""
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [(prefix or "(the value)", obj)]
    if isinstance(obj, dict):
        return [kv for key, v in obj.items() for kv in non_finite(v, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(obj, (list, tuple)):
        return [kv for i, v in enumerate(obj) for kv in non_finite(v, f"{prefix}[{i}]")]
    return []


def write_json(path: str | Path, obj: Any) -> None:
    """Valid JSON only: a NaN or infinity is an error naming the key, never a bare token."""
    bad = non_finite(obj)
    if bad:
        raise DataError(f"{path}: refusing to write non-finite {', '.join(key for key, _ in bad[:5])} = "
                        f"{bad[0][1]}; nothing was written")
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode())


# A member stored as bits: "<name>__bits<width>" holds np.packbits of a 0/1 uint8 N x width array,
# which read_npz gives back as <name>; binarized images take an eighth of the bytes, uncompressed.
_BITS = re.compile(r"(.+)__bits(\d+)")


def write_npz(path: str | Path, packed: Sequence[str] = (), **arrays: np.ndarray) -> None:
    """An uncompressed .npz (readable by np.load), written atomically and byte-reproducibly.

    Uncompressed, because deflate's output is not canonical: the zlib that Python links (zlib,
    zlib-ng on Fedora, Apple's on macOS, uv's and conda's own) may deflate the same arrays into other
    bytes, and DVC would see another file. The arrays are compact instead: the arrays named in
    `packed` (0/1 uint8, N x width: binarized images) are stored as bits. np.savez stamps each
    member with the current time; this writes the same format with a fixed one. Each member is
    serialized first and written whole (writestr, sizes known): streaming it with force_zip64
    wrote other zip64 headers under Python 3.11.2 than under 3.11.7 (found by the numerics probe).
    """
    stored = {}
    for name, array in arrays.items():
        array = np.asanyarray(array)
        if name in packed:
            if array.dtype != np.uint8 or array.ndim != 2 or array.max(initial=0) > 1:
                raise ValueError(f"{path}: {name} is not a 0/1 uint8 matrix, cannot be stored as bits")
            stored[f"{name}__bits{array.shape[1]}"] = np.packbits(array, axis=1)
        else:
            stored[name] = array
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, array in stored.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED
                buf = io.BytesIO()
                np.lib.format.write_array(buf, array, allow_pickle=False)
                zf.writestr(info, buf.getvalue())


def _unpacked(name: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    match = _BITS.fullmatch(name)
    if match is None:
        return name, array
    width = int(match.group(2))
    if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != -(-width // 8):
        raise ValueError(f"member {name} is not {width} bits a row")
    return match.group(1), np.unpackbits(array, axis=1, count=width)


def write_csv(path: str | Path, columns: Mapping[str, Sequence[Any]]) -> None:
    """Columns of numbers as CSV, written atomically: a header, then one row per index, floats
    as %.6g. The bytes pandas' DataFrame(columns).to_csv(index=False, float_format="%.6g")
    writes (tested), through the csv module: importing pandas made the train and anomaly stages
    start measurably later, for one small table each."""
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"{path}: columns of different lengths {sorted(lengths)}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(zip(*(map(_csv_cell, values) for values in columns.values())))
    write_bytes(path, buf.getvalue().encode())


def _csv_cell(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else "%.6g" % value
    return int(value) if isinstance(value, np.integer) else value


def write_checkpoint(path: str | Path, tensors: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    """Tensors and a JSON-able description as a safetensors file whose bytes are a function of them
    alone. torch.save would write a serialization id hashed by the C++ standard library (another on
    macOS than on Linux). The description goes in as one metadata entry of canonical JSON: the
    library writes its metadata map in hash order, so several entries came out in another order in
    each process."""
    from safetensors.torch import save

    write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                           metadata={CHECKPOINT_META: json.dumps(meta, sort_keys=True, separators=(",", ":"))}))


CHECKPOINT_META = "mnist_vae"


# PNG's colour types by channels: grey, RGB, RGBA
_PNG_COLOUR = {1: 0, 3: 2, 4: 6}


def png_bytes(image: np.ndarray) -> bytes:
    """A 2-d uint8 (grey) or H x W x 3 / 4 uint8 array (RGB, RGBA) as PNG bytes that depend on the
    pixels alone: each row filtered by PNG's Up filter and deflated by zlib-ng from its pinned wheel
    (the zlib-ng package brings its own codec). Pillow's and matplotlib's PNGs were deflated by
    whatever zlib the Pillow binary links (the system's here: Debian's, Fedora's zlib-ng, Apple's),
    and deflate's output is not canonical."""
    from zlib_ng import zlib_ng

    arr = np.ascontiguousarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in _PNG_COLOUR):
        raise TypeError(f"a PNG needs H x W (x 1, 3 or 4) uint8 pixels, got {arr.dtype} {arr.shape}")
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    rows = arr.reshape(arr.shape[0], -1)
    up = rows - np.vstack([np.zeros_like(rows[:1]), rows[:-1]])  # uint8: modulo 256, as the filter is
    raw = np.hstack([np.full((len(rows), 1), 2, np.uint8), up]).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", arr.shape[1], arr.shape[0], 8, _PNG_COLOUR[channels], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib_ng.compress(raw, 9)) + chunk(b"IEND", b"")


def write_png(path: str | Path, image: np.ndarray) -> None:
    """A 2-d uint8 (gray) or H x W x 3 uint8 array as PNG (:func:`png_bytes`)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"write_png needs uint8 pixels, got {arr.dtype}")
    write_bytes(path, png_bytes(arr))


def write_figure(path: str | Path, fig, **kwargs) -> None:
    """Save a matplotlib figure atomically and close it. A PNG is drawn by matplotlib (Agg), read
    back (inflating is canonical: one set of pixels) and encoded by :func:`png_bytes`."""
    import matplotlib.pyplot as plt
    from PIL import Image

    fmt = Path(path).suffix.lstrip(".")
    if fmt != "png":
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, **kwargs)
    else:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", **kwargs)
        buf.seek(0)
        with Image.open(buf) as drawn:
            pixels = np.asarray(drawn.convert("RGBA" if "A" in drawn.mode else "RGB"))
        write_bytes(path, png_bytes(pixels))
    plt.close(fig)


# --- reading ---------------------------------------------------------------------------------


def producing_stage(path: str | Path, dvc_yaml: str | Path = "dvc.yaml") -> str | None:
    """The resolved dvc.yaml stage that writes `path` (an out, or a file inside an out directory)."""
    from . import pipeline

    try:
        stages = pipeline.stages(dvc_yaml, Path(dvc_yaml).with_name("params.yaml"))
    except (OSError, yaml.YAMLError, pipeline.TemplateError):
        return None
    target = Path(path).as_posix()
    for name, stage in stages.items():
        for group in ("outs", "metrics", "plots"):
            for out in stage.get(group) or []:
                out = next(iter(out)) if isinstance(out, dict) else out
                if target == out or target.startswith(out.rstrip("/") + "/"):
                    return name
    return None


def _git_tracks(path: str | Path) -> bool | None:
    """Whether git tracks the file (None: not in a git work tree, or no git)."""
    import subprocess

    try:
        proc = subprocess.run(["git", "ls-files", "--error-unmatch", "--", str(path)], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode == 0:
        return True
    return None if b"not a git repository" in proc.stderr else False


def _model_of(path: str | Path) -> str | None:
    """The model a per-model artifact belongs to (mnist_vae.io.layout), if it is one."""
    import re

    from . import layout

    target = Path(path).as_posix()
    for pattern in (r"models/([^/]+)\.safetensors", r"data/(?:tracking|evaluation|anomaly)/([^/]+)\.npz",
                    re.escape(layout.MODELS_REPORTS) + r"/([^/]+)/.+", re.escape(layout.IMAGES) + r"/([^/]+)/.+"):
        match = re.fullmatch(pattern, target)
        if match:
            return match.group(1)
    return None


def dvc_busy(root: str | Path = ".") -> bool:
    """Whether another process holds DVC's lock of the repository at `root` (zc.lockfile's flock on
    .dvc/tmp/lock: a `dvc repro` that may be between two stages). A stage that DVC runs (DVC_STAGE
    set) is inside that lock itself."""
    lock = Path(root) / ".dvc" / "tmp" / "lock"
    if os.environ.get("DVC_STAGE") or not lock.exists():
        return False
    import fcntl

    try:
        with open(lock, "rb") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def restore_hint(path: str | Path) -> str:
    """The command that gives the file back: DVC for a stage's output, git for a file git keeps;
    for a file neither makes, what would have to change for a stage to write it. While another
    dvc command holds the repository's lock, first that: it may be about to write the file."""
    if dvc_busy():
        return ("another dvc command holds this repository's lock (.dvc/tmp/lock): a `dvc repro` between two stages "
                "may be about to write it; wait for it to end, then rerun this")
    stage = producing_stage(path)
    if stage is not None:
        return f"restore it with `dvc checkout {path}` (from DVC's cache) or rebuild it with `dvc repro -f -s {stage}`"
    if _git_tracks(path) is not False:  # a file kept in git (reference.yaml, the spread study)
        return f"restore it with `git checkout -- {path}`"
    model = _model_of(path)
    if model is not None:
        return (f"no stage writes it and git does not track it: '{model}' is not a model under `models` in "
                f"params.yaml (an entry `models.{model}` makes dvc.yaml's train@{model} and the stages after it)")
    return "no stage in dvc.yaml writes it and git does not track it: check the path"


def read_npz(path: str | Path, required: tuple[str, ...] | list[str] = ()) -> dict[str, np.ndarray]:
    """Every array of an .npz artifact; DataError naming the file when it is missing, not a
    readable .npz, holds pickled objects, or lacks one of the `required` arrays."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found; {restore_hint(path)}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = {(_BITS.fullmatch(k).group(1) if _BITS.fullmatch(k) else k): k for k in npz.files}
            missing = [k for k in required if k not in names]
            if missing:
                raise DataError(f"{path}: has no array {missing[0]!r} (it has {', '.join(names) or 'none'}); "
                                f"{restore_hint(path)}")
            arrays = dict(_unpacked(k, npz[k]) for k in npz.files)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        reason = "holds pickled objects" if "allow_pickle" in str(exc) else f"{type(exc).__name__}"
        raise DataError(f"{path}: not a readable .npz file ({reason}: truncated or replaced?); "
                        f"{restore_hint(path)}") from None
    for name, array in arrays.items():
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            raise DataError(f"{path}: array {name!r} holds {int((~np.isfinite(array)).sum())} non-finite values "
                            f"(NaN or infinity: a run that diverged?); {restore_hint(path)}")
    return arrays


def read_text(path: str | Path) -> str:
    """A text artifact; DataError naming the file when it is missing or not UTF-8."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found; {restore_hint(path)}")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not readable text ({type(exc).__name__}); {restore_hint(path)}") from None


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); {restore_hint(path)}") from None


def read_yaml(path: str | Path) -> Any:
    try:
        return yamlfile.loads(read_text(path))
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({' '.join(str(exc).split())}); {restore_hint(path)}") from None


def read_csv(path: str | Path, required: tuple[str, ...] | list[str] = ()):
    """A CSV artifact as a pandas DataFrame; DataError naming the file when it is missing,
    unparsable or lacks one of the `required` columns."""
    import pandas as pd

    text = read_text(path)
    try:
        frame = pd.read_csv(io.StringIO(text))
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: not a readable CSV ({type(exc).__name__}); {restore_hint(path)}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: has no column {missing[0]!r} (it has {', '.join(map(str, frame.columns))}); "
                        f"{restore_hint(path)}")
    return frame


def read_checkpoint(path: str | Path, device: Any = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, description) of a file written by :func:`write_checkpoint`; DataError naming the
    file when it is missing, unreadable, or differs from the md5 that dvc.lock records for it (a
    corrupted DVC cache object spreads silently otherwise: safetensors has no checksum)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found; {restore_hint(path)}")
    raw = path.read_bytes()
    from .integrity import check_recorded

    check_recorded(path, raw)
    try:
        tensors = load(raw)
        header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
        meta = json.loads(header["__metadata__"][CHECKPOINT_META])
    except (SafetensorError, ValueError, KeyError, TypeError, OverflowError) as exc:
        first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {first}; truncated or replaced?); "
                        f"{restore_hint(path)}") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: not a readable checkpoint (its description is not a mapping); {restore_hint(path)}")
    return {k: v.to(device) for k, v in tensors.items()}, meta
