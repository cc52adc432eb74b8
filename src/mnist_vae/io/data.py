"""MNIST and Fashion-MNIST: fetching with md5 checks, IDX parsing, binarization."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import tempfile
import struct
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .artifacts import atomic_path, write_npz
from .errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dataset:
    name: str
    mirror_env: str  # environment variable naming a local mirror directory, tried first
    mirrors: tuple[str, ...]  # public mirrors (base URLs), in order
    resources: tuple[tuple[str, str, str], ...]  # (file name, official gz md5, official content md5)


# The official files: (name, gz md5, md5 of the decompressed content), and the public mirrors.
# The names, gz md5s and mirrors are torchvision's (MNIST.resources, .mirrors; the reference's own
# loader), copied here because importing torchvision.datasets imports torch and torchvision's
# models, which made the download stage, a file check, take seconds; tests/io/test_data.py checks
# the copy against torchvision. The content md5s are published beside the gz md5s: Debian's
# dataset-fashion-mnist package ships recompressed gz files (other gzip header, other gz md5) whose
# content is byte-identical to the official one, so a file is accepted when either md5 matches.
OFFICIAL = {
    "mnist": (
        ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
        ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
        ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
        ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
    ),
    "fashion-mnist": (
        ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
        ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
        ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
    ),
}
MIRRORS = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}


DATASET_NAMES = ("mnist", "fashion-mnist")
_MIRROR_ENV = {"mnist": "MNIST_MIRROR", "fashion-mnist": "FASHION_MNIST_MIRROR"}


def dataset(name: str) -> Dataset:
    return Dataset(name, _MIRROR_ENV[name], MIRRORS[name], OFFICIAL[name])


SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SPLIT_SIZES = {"train": 60000, "test": 10000}


def md5sum(path: Path, decompress: bool = False) -> str:
    """md5 of a file's bytes, or of its gzip-decompressed content."""
    h = hashlib.md5()
    with (gzip.open(path, "rb") if decompress else open(path, "rb")) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, md5: str, content_md5: str) -> str | None:
    """None when the file is an official one (gz md5, or content md5 for a recompressed copy),
    else a message with the expected and actual md5."""
    actual = md5sum(path)
    if actual == md5:
        return None
    try:
        content = md5sum(path, decompress=True)
    except (OSError, EOFError, zlib.error) as exc:
        content = f"unreadable gzip ({exc})"
    if content == content_md5:
        return None
    return (f"md5 mismatch: expected {md5}, got {actual} (content md5: expected {content_md5}, got {content}); "
            "truncated or corrupted file")


def _copy_from(source: str, dest: Path, timeout: float) -> None:
    """Copy a local path or a URL to dest (no checks)."""
    if "://" in source:
        with urllib.request.urlopen(source, timeout=timeout) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out)
    else:
        shutil.copyfile(source, dest)


OFFLINE_ENV = "MNIST_VAE_OFFLINE"  # set to 1 to try the local mirror only, never the network
OFFLINE_VALUES = ("1", "true", "yes", "on")


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in OFFLINE_VALUES


def sources_for(dataset: Dataset, mirror_dir: str | None) -> list[tuple[str, str]]:
    """(description, base) pairs in the order they are tried: local mirror first, then public
    (unless $MNIST_VAE_OFFLINE=1)."""
    sources = []
    if mirror_dir:
        sources.append((f"{dataset.mirror_env}={mirror_dir}", mirror_dir))
    if not offline():
        sources.extend((url, url) for url in dataset.mirrors)
    return sources


def fetch_file(filename: str, md5: str, content_md5: str, dest_dir: Path, sources: list[tuple[str, str]],
               timeout: float = 30, hint: str = "") -> str:
    """Fetch one file into dest_dir from the first source that serves it with the right md5.

    Returns the description of the source used. A file that fails its check never reaches
    dest_dir. When every source fails, raises DataError listing each source and why, then
    `hint` (what to set).
    """
    dest = Path(dest_dir) / filename
    failures = []
    for desc, base in sources:
        if "://" not in base and not Path(base).is_dir():
            failures.append(f"  {desc}: mirror directory does not exist")
            continue
        src = base.rstrip("/") + "/" + filename if "://" in base else str(Path(base) / filename)
        try:
            with atomic_path(dest) as tmp:
                _copy_from(src, tmp, timeout)
                problem = verify(tmp, md5, content_md5)
                if problem:
                    raise DataError(f"{filename} from {desc}: {problem}")
            return desc
        except DataError as exc:
            log.warning("%s", exc)
            failures.append(f"  {desc}: {exc}")
        except (OSError, ValueError) as exc:  # missing file, network errors (URLError is an OSError)
            failures.append(f"  {desc}: {type(exc).__name__}: {exc}")
    if not failures:
        failures.append("  (no source to try)")
    raise DataError(f"could not fetch {filename}; sources tried:\n" + "\n".join(failures) + (f"\n{hint}" if hint else ""))


def _hint(ds: Dataset, mirror_dir: str | None) -> str:
    folder = "/usr/share/datasets/fashion-mnist (Debian: apt-get install dataset-fashion-mnist)" \
        if ds.name == "fashion-mnist" else "a folder holding the four official gz files"
    if mirror_dir:
        return f"{ds.name}: check that {ds.mirror_env}={mirror_dir} holds the four official gz files."
    why = f"{OFFLINE_ENV}=1 turns the public mirrors off" if offline() else "the public mirrors failed"
    return f"{ds.name}: {ds.mirror_env} is not set and {why}; set {ds.mirror_env} to {folder}."


def download(dataset_name: str | Dataset, dest_dir: str | Path, mirror_dir: str | None = None,
             timeout: float = 30) -> dict:
    """Fetch the four files of a dataset into dest_dir; return {file: source}.

    The files go into a temporary sibling folder that replaces dest_dir only once all four are
    there and checked: a failed or interrupted download leaves no partial folder, and a previous
    complete one stays as it was. Files already in dest_dir with the right md5 are reused."""
    ds = dataset(dataset_name) if isinstance(dataset_name, str) else dataset_name
    if mirror_dir is None:
        mirror_dir = os.environ.get(ds.mirror_env) or None
    sources = sources_for(ds, mirror_dir)
    dest_dir = Path(dest_dir)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".partial", dir=dest_dir.parent))
    used = {}
    try:
        for filename, md5, content_md5 in ds.resources:
            existing = dest_dir / filename
            if existing.exists() and verify(existing, md5, content_md5) is None:
                shutil.copy2(existing, tmp / filename)
                used[filename] = "already present"
                continue
            used[filename] = fetch_file(filename, md5, content_md5, tmp, sources, timeout, _hint(ds, mirror_dir))
            log.info("%s/%s: md5 ok (from %s)", ds.name, filename, used[filename])
        _replace_dir(tmp, dest_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return used


def _replace_dir(new: Path, dest: Path) -> None:
    """Put the folder `new` where `dest` is, replacing it (two renames: no moment without one)."""
    if not dest.exists():
        new.rename(dest)
        return
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    dest.rename(old)
    new.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


# IDX parsing. torchvision's reader (datasets.mnist.read_sn3_pascalvincent_tensor) only opens
# uncompressed files and checks the header with `assert`, so a wrong magic number or a
# truncated file gives a bare AssertionError or a reshape error from deep inside torch. This
# parser reads the gz directly and names the file and the problem instead.
IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}  # labels (1-d), images (3-d), unsigned bytes


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read a gzip-compressed IDX file of unsigned bytes with `ndim` dimensions."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable gzip file (truncated or corrupted?): {exc}") from None
    header = 4 * (ndim + 1)
    if len(raw) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != IDX_MAGIC[ndim]:
        raise DataError(
            f"{path}: wrong IDX magic number 0x{magic:08x}, expected 0x{IDX_MAGIC[ndim]:08x} "
            f"({'images' if ndim == 3 else 'labels'})"
        )
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape)) + header
    if len(raw) != expected:
        raise DataError(f"{path}: IDX header says shape {shape} ({expected} bytes), file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_split(raw_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28 uint8, labels N uint8) of one split, with shape checks."""
    img_file, lbl_file = SPLIT_FILES[split]
    images = read_idx(Path(raw_dir) / img_file, 3)
    labels = read_idx(Path(raw_dir) / lbl_file, 1)
    n = SPLIT_SIZES[split]
    if images.shape != (n, 28, 28) or labels.shape != (n,):
        raise DataError(
            f"{raw_dir}: {split} split has images {images.shape} and labels {labels.shape}, "
            f"expected ({n}, 28, 28) and ({n},)"
        )
    return images, labels


def binarize(images: np.ndarray, threshold: float) -> np.ndarray:
    """Scale bytes to [0, 1] and set a pixel to 1 when it is >= threshold; flatten to N x 784."""
    flat = images.reshape(len(images), -1)
    return (flat.astype(np.float32) / 255.0 >= threshold).astype(np.uint8)


def binarize_dataset(raw_dir: str | Path, out_path: str | Path, threshold: float) -> dict:
    arrays = {}
    for split in ("train", "test"):
        images, labels = read_split(raw_dir, split)
        arrays[f"{split}_x"] = binarize(images, threshold)
        arrays[f"{split}_y"] = labels.copy()
    write_npz(out_path, packed=("train_x", "test_x"), **arrays)
    return {k: v.shape for k, v in arrays.items()}
