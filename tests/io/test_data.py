import gzip
import hashlib
import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import MNIST_MIRROR, REPO, mirror_env

from mnist_vae.io import data
from mnist_vae.io.data import DataError


def write_idx(path, array, magic=None):
    array = np.asarray(array, dtype=np.uint8)
    magic = magic if magic is not None else (0x0801 if array.ndim == 1 else 0x0803)
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.tobytes())
    return path


def test_read_idx_good_file(tmp_path):
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    out = data.read_idx(write_idx(tmp_path / "img.gz", images), 3)
    assert out.shape == (2, 28, 28) and np.array_equal(out, images)
    labels = data.read_idx(write_idx(tmp_path / "lbl.gz", [7, 2, 1]), 1)
    assert labels.tolist() == [7, 2, 1]


def test_read_idx_wrong_magic(tmp_path):
    path = write_idx(tmp_path / "img.gz", np.zeros((1, 28, 28)), magic=0x0801)
    with pytest.raises(DataError, match=r"img.gz: wrong IDX magic number 0x00000801, expected 0x00000803"):
        data.read_idx(path, 3)


def test_read_idx_truncated_gz(tmp_path):
    path = write_idx(tmp_path / "img.gz", np.ones((3, 28, 28)))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match="img.gz: not a readable gzip file"):
        data.read_idx(path, 3)


def test_read_idx_payload_shorter_than_header_says(tmp_path):
    path = tmp_path / "img.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(">IIII", 0x0803, 5, 28, 28) + bytes(100))
    with pytest.raises(DataError, match=r"header says shape \(5, 28, 28\)"):
        data.read_idx(path, 3)


def test_read_idx_not_gzip(tmp_path):
    path = tmp_path / "img.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="not a readable gzip file"):
        data.read_idx(path, 3)


@pytest.mark.parametrize("name", data.DATASET_NAMES)
def test_the_official_files_and_mirrors_are_torchvisions(name):
    """The copy of torchvision's file names, gz md5s and public mirrors (kept so that the download
    stage imports no torch) equals torchvision's own."""
    from torchvision.datasets import MNIST, FashionMNIST

    tv = {"mnist": MNIST, "fashion-mnist": FashionMNIST}[name]
    ds = data.dataset(name)
    assert [(f, md5) for f, md5, _ in ds.resources] == [tuple(r) for r in tv.resources]
    assert list(ds.mirrors) == list(tv.mirrors)


def test_the_download_stage_imports_no_torch(tmp_path):
    """The download stage, run to the end on the mirror, never imports torch (its start-up cost)."""
    code = ("import runpy, sys\n"
            "sys.argv = ['stages/download.py', '--datasets', 'mnist', '--out', sys.argv[1]]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "raw")], cwd=REPO,
                          env=mirror_env(PYTHONPATH=str(REPO / "src")), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list((tmp_path / "raw/mnist").iterdir())) == 4
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_binarize_threshold():
    images = np.array([[[0, 127, 128, 255]]], dtype=np.uint8)
    assert data.binarize(images, 0.5).tolist() == [[0, 0, 1, 1]]  # byte >= 128
    assert data.binarize(images, 0.9).tolist() == [[0, 0, 0, 1]]
    assert data.binarize(images, 0.001).tolist() == [[0, 1, 1, 1]]
    assert data.binarize(images, 0.5).dtype == np.uint8


def make_dataset(tmp_path, n=3):
    """A fake dataset of 4 tiny IDX files and its md5 table."""
    src = tmp_path / "mirror"
    src.mkdir()
    resources = []
    for name, arr in (("a-images.gz", np.ones((n, 28, 28))), ("a-labels.gz", np.arange(n))):
        write_idx(src / name, arr)
        raw = gzip.decompress((src / name).read_bytes())
        resources.append((name, data.md5sum(src / name), hashlib.md5(raw).hexdigest()))
    return src, data.Dataset("fake", "FAKE_MIRROR", (), tuple(resources))


def test_download_from_local_mirror(tmp_path):
    src, ds = make_dataset(tmp_path)
    used = data.download(ds, tmp_path / "out", mirror_dir=str(src))
    assert set(used) == {"a-images.gz", "a-labels.gz"}
    assert (tmp_path / "out" / "a-images.gz").read_bytes() == (src / "a-images.gz").read_bytes()


def test_download_wrong_md5_names_file_source_and_md5s_and_keeps_nothing(tmp_path):
    src, ds = make_dataset(tmp_path)
    blob = bytearray((src / "a-images.gz").read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte
    (src / "a-images.gz").write_bytes(bytes(blob))
    with pytest.raises(DataError) as err:
        data.download(ds, tmp_path / "out", mirror_dir=str(src))
    msg = str(err.value)
    expected_md5 = ds.resources[0][1]
    assert "a-images.gz" in msg and f"FAKE_MIRROR={src}" in msg
    assert f"expected {expected_md5}" in msg and f"got {data.md5sum(src / 'a-images.gz')}" in msg
    assert not (tmp_path / "out" / "a-images.gz").exists()
    assert not (tmp_path / "out").exists()  # no temp files, and no empty folder this call created


def test_download_truncated_file(tmp_path):
    src, ds = make_dataset(tmp_path)
    (src / "a-labels.gz").write_bytes((src / "a-labels.gz").read_bytes()[:10])
    with pytest.raises(DataError, match="md5 mismatch"):
        data.download(ds, tmp_path / "out", mirror_dir=str(src))
    assert not (tmp_path / "out" / "a-labels.gz").exists()


def test_missing_mirror_directory_then_public_mirror(tmp_path, monkeypatch):
    """A missing local mirror is reported; the next source (here a file:// 'public' mirror) serves."""
    monkeypatch.delenv(data.OFFLINE_ENV, raising=False)
    src, ds = make_dataset(tmp_path)
    ds_public = data.Dataset(ds.name, ds.mirror_env, (src.as_uri() + "/",), ds.resources)
    used = data.download(ds_public, tmp_path / "out", mirror_dir=str(tmp_path / "nowhere"))
    assert all(s == src.as_uri() + "/" for s in used.values())


def test_no_source_works_lists_every_source(tmp_path, monkeypatch):
    monkeypatch.delenv(data.OFFLINE_ENV, raising=False)
    _, ds = make_dataset(tmp_path)
    ds_public = data.Dataset(ds.name, ds.mirror_env, ((tmp_path / "gone").as_uri() + "/",), ds.resources)
    with pytest.raises(DataError) as err:
        data.download(ds_public, tmp_path / "out", mirror_dir=str(tmp_path / "nowhere"))
    msg = str(err.value)
    assert f"FAKE_MIRROR={tmp_path / 'nowhere'}: mirror directory does not exist" in msg
    assert (tmp_path / "gone").as_uri() in msg


def test_offline_mode_skips_public_mirrors(tmp_path, monkeypatch):
    src, ds = make_dataset(tmp_path)
    ds_public = data.Dataset(ds.name, ds.mirror_env, (src.as_uri() + "/",), ds.resources)
    monkeypatch.setenv(data.OFFLINE_ENV, "1")
    with pytest.raises(DataError, match="mirror directory does not exist") as err:
        data.download(ds_public, tmp_path / "out", mirror_dir=str(tmp_path / "nowhere"))
    assert src.as_uri() not in str(err.value)
    monkeypatch.setenv(data.OFFLINE_ENV, "0")
    data.download(ds_public, tmp_path / "out", mirror_dir=str(tmp_path / "nowhere"))


def test_recompressed_copy_with_official_content_is_accepted(tmp_path):
    """Debian's Fashion-MNIST package recompresses the files: other gz md5, same content."""
    src, ds = make_dataset(tmp_path)
    raw = gzip.decompress((src / "a-images.gz").read_bytes())
    (src / "a-images.gz").write_bytes(gzip.compress(raw, compresslevel=1, mtime=12345))
    assert data.md5sum(src / "a-images.gz") != ds.resources[0][1]
    data.download(ds, tmp_path / "out", mirror_dir=str(src))
    assert (tmp_path / "out" / "a-images.gz").exists()


def test_real_mnist_mirror_parses(tmp_path):
    """The real files from the mirror: md5s, shapes, first labels, pixel mean after binarizing."""
    data.download("mnist", tmp_path, mirror_dir=MNIST_MIRROR)
    train_x, train_y = data.read_split(tmp_path, "train")
    test_x, test_y = data.read_split(tmp_path, "test")
    assert train_x.shape == (60000, 28, 28) and test_x.shape == (10000, 28, 28)
    assert train_y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test_y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert data.binarize(train_x, 0.5).mean() == pytest.approx(0.1323, abs=5e-5)
    assert test_y[[1, 4, 12, 15, 22]].tolist() == [2, 4, 9, 5, 6]  # the reference's tracked digits


def _two_sources(tmp_path):
    """A good local mirror and a good 'public' mirror (file://), holding the same files."""
    src, ds = make_dataset(tmp_path)
    public = tmp_path / "public"
    public.mkdir()
    for f in src.iterdir():
        (public / f.name).write_bytes(f.read_bytes())
    return src, data.Dataset(ds.name, ds.mirror_env, (public.as_uri() + "/",), ds.resources), public.as_uri() + "/"


def test_a_good_mirror_is_preferred_over_a_good_public_source(tmp_path, monkeypatch):
    monkeypatch.delenv(data.OFFLINE_ENV, raising=False)
    src, ds, public = _two_sources(tmp_path)
    used = data.download(ds, tmp_path / "out", mirror_dir=str(src))
    assert used == {"a-images.gz": f"FAKE_MIRROR={src}", "a-labels.gz": f"FAKE_MIRROR={src}"}


def test_a_mirror_file_with_a_bad_md5_falls_through_to_the_next_source(tmp_path, monkeypatch):
    monkeypatch.delenv(data.OFFLINE_ENV, raising=False)
    src, ds, public = _two_sources(tmp_path)
    (src / "a-labels.gz").write_bytes(b"corrupt")
    used = data.download(ds, tmp_path / "out", mirror_dir=str(src))
    assert used == {"a-images.gz": f"FAKE_MIRROR={src}", "a-labels.gz": public}
    assert (tmp_path / "out/a-labels.gz").read_bytes() == (tmp_path / "public/a-labels.gz").read_bytes()


def test_the_environment_variable_names_the_mirror_when_no_directory_is_passed(tmp_path, monkeypatch):
    monkeypatch.setenv(data.OFFLINE_ENV, "1")
    src, ds, _ = _two_sources(tmp_path)
    monkeypatch.setenv("FAKE_MIRROR", str(src))
    assert set(data.download(ds, tmp_path / "out").values()) == {f"FAKE_MIRROR={src}"}


def test_files_already_present_are_checked_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv(data.OFFLINE_ENV, "1")
    src, ds, _ = _two_sources(tmp_path)
    data.download(ds, tmp_path / "out", mirror_dir=str(src))
    assert data.download(ds, tmp_path / "out", mirror_dir=str(src)) == {
        "a-images.gz": "already present", "a-labels.gz": "already present"}
    (tmp_path / "out/a-images.gz").write_bytes(b"damaged since")  # a present but bad file is fetched again
    assert data.download(ds, tmp_path / "out", mirror_dir=str(src))["a-images.gz"] == f"FAKE_MIRROR={src}"


@pytest.mark.parametrize("value, is_offline", [("1", True), ("true", True), ("True", True), ("YES", True),
                                               ("on", True), (" 1 ", True), ("0", False), ("", False),
                                               ("no", False), ("false", False)])
def test_offline_switch_spellings(tmp_path, monkeypatch, value, is_offline):
    monkeypatch.setenv(data.OFFLINE_ENV, value)
    src, ds, public = _two_sources(tmp_path)
    assert data.offline() is is_offline
    sources = [desc for desc, _ in data.sources_for(ds, str(src))]
    assert sources == ([f"FAKE_MIRROR={src}"] if is_offline else [f"FAKE_MIRROR={src}", public])


def test_offline_without_a_mirror_says_which_variable_to_set(tmp_path, monkeypatch):
    monkeypatch.setenv(data.OFFLINE_ENV, "1")
    monkeypatch.delenv("FASHION_MNIST_MIRROR", raising=False)
    with pytest.raises(DataError) as err:
        data.download("fashion-mnist", tmp_path / "raw/fashion-mnist")
    msg = str(err.value)
    assert "fashion-mnist: FASHION_MNIST_MIRROR is not set and MNIST_VAE_OFFLINE=1 turns the public mirrors off" in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert not (tmp_path / "raw/fashion-mnist").exists()  # no empty folder left behind


def test_failed_public_mirrors_without_a_mirror_suggest_setting_one(tmp_path, monkeypatch):
    monkeypatch.delenv(data.OFFLINE_ENV, raising=False)
    _, ds = make_dataset(tmp_path)
    ds = data.Dataset(ds.name, ds.mirror_env, ((tmp_path / "gone").as_uri() + "/",), ds.resources)
    with pytest.raises(DataError, match="FAKE_MIRROR is not set and the public mirrors failed; set FAKE_MIRROR"):
        data.download(ds, tmp_path / "out")


def _mirror_with(tmp_path, names):
    import shutil
    from pathlib import Path

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in names:
        shutil.copy2(Path(MNIST_MIRROR) / name, mirror / name)
    return mirror


def test_a_failed_download_leaves_no_partial_folder(tmp_path, monkeypatch):
    """Three of four files reachable: the download fails naming the missing one, and nothing is
    left where the folder would be (nor any temporary folder beside it)."""
    monkeypatch.setenv(data.OFFLINE_ENV, "1")
    files = [f for f, _, _ in data.dataset("mnist").resources]
    mirror = _mirror_with(tmp_path, files[:3])
    dest = tmp_path / "raw" / "mnist"
    with pytest.raises(DataError, match=files[3]):
        data.download("mnist", dest, mirror_dir=str(mirror))
    assert not dest.exists() and list((tmp_path / "raw").iterdir()) == []


def test_a_failed_download_keeps_the_previous_complete_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(data.OFFLINE_ENV, "1")
    files = [f for f, _, _ in data.dataset("mnist").resources]
    dest = tmp_path / "raw" / "mnist"
    data.download("mnist", dest, mirror_dir=MNIST_MIRROR)
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    (dest / files[0]).write_bytes(b"damaged")  # one file to fetch again, from a mirror that lacks it
    mirror = _mirror_with(tmp_path, files[1:])
    with pytest.raises(DataError, match=files[0]):
        data.download("mnist", dest, mirror_dir=str(mirror))
    assert sorted(p.name for p in dest.iterdir()) == sorted(before)  # the old folder, untouched
    assert (dest / files[0]).read_bytes() == b"damaged" and list((tmp_path / "raw").iterdir()) == [dest]
    assert data.download("mnist", dest, mirror_dir=MNIST_MIRROR)[files[1]] == "already present"
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
