"""Every output's bytes are a function of its content: checkpoints without an implementation-
defined field, arrays stored without the system's compressor."""

import hashlib
import io
import json
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest
import torch

from mnist_vae.io import artifacts

WRITE = """
import sys, torch
from mnist_vae.core.model import VAE, checkpoint, save_checkpoint
torch.manual_seed(3)
save_checkpoint(sys.argv[1], checkpoint(VAE(2, [8]), train={"lr": 0.001, "seed": 199, "batch_size": 128,
                                                              "epochs": 10, "step": "fused", "device": "auto"}))
"""


def test_a_checkpoint_is_the_same_bytes_from_two_processes_and_holds_no_serialization_id(tmp_path):
    paths = [tmp_path / f"{i}.safetensors" for i in range(2)]
    for path in paths:  # separate processes: a hash-ordered map would come out in another order
        subprocess.run([sys.executable, "-c", WRITE, str(path)], check=True)
    raw = paths[0].read_bytes()
    assert raw == paths[1].read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    # every field: a tensor's dtype, shape and offsets, and the one description entry of canonical JSON
    assert set(header["__metadata__"]) == {"mnist_vae"}
    meta = json.loads(header["__metadata__"]["mnist_vae"])
    assert meta == {"config": {"latent_dim": 2, "encoder_hidden": [8], "decoder_hidden": [8], "input_dim": 784},
                    "train": {"lr": 0.001, "seed": 199, "batch_size": 128, "epochs": 10, "step": "fused",
                              "device": "auto"}}
    assert header["__metadata__"]["mnist_vae"] == json.dumps(meta, sort_keys=True, separators=(",", ":"))
    for name, entry in header.items():
        if name != "__metadata__":
            assert set(entry) == {"dtype", "shape", "data_offsets"}, name
    assert b"serialization_id" not in raw and not raw.startswith(b"PK")  # not a torch.save zip


def test_safetensors_own_metadata_map_is_not_ordered(tmp_path):
    """Why the description is one entry: several entries come out in hash order, another in each
    process (the check that found it; if a later safetensors sorts them, this fails and the
    single entry is merely tidy)."""
    code = ("import hashlib, numpy; from safetensors.numpy import save; print(hashlib.md5(save({'a': numpy.ones(2)}, "
            "metadata={k: k for k in 'abcdefgh'})).hexdigest())")  # the same writer as torch's, without torch
    seen = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(6)}
    assert len(seen) > 1


def test_npz_members_are_stored_and_bits_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.random((37, 784)) < 0.3).astype(np.uint8)
    y = rng.integers(0, 10, 37).astype(np.uint8)
    path = tmp_path / "a.npz"
    artifacts.write_npz(path, packed=("train_x",), train_x=x, train_y=y, f=np.linspace(0, 1, 5, dtype=np.float32))
    with zipfile.ZipFile(path) as zf:
        assert {i.filename: i.compress_type for i in zf.infolist()} == {
            "train_x__bits784.npy": zipfile.ZIP_STORED, "train_y.npy": zipfile.ZIP_STORED, "f.npy": zipfile.ZIP_STORED}
        assert zf.getinfo("train_x__bits784.npy").file_size < x.size // 8 + 200  # an eighth: bits
    back = artifacts.read_npz(path, ["train_x", "train_y"])
    assert back["train_x"].dtype == np.uint8 and np.array_equal(back["train_x"], x)
    assert np.array_equal(back["train_y"], y) and sorted(back) == ["f", "train_x", "train_y"]
    with pytest.raises(ValueError, match="not a 0/1 uint8 matrix"):
        artifacts.write_npz(tmp_path / "b.npz", packed=("x",), x=np.full((2, 8), 2, np.uint8))
    assert not (tmp_path / "b.npz").exists()


def test_deflate_is_not_canonical_so_no_output_is_deflated():
    """The reason the arrays are stored: zlib and zlib-ng deflate the same bytes differently (so
    an .npz deflated on Fedora, which ships zlib-ng as zlib, had another md5)."""
    from zlib_ng import zlib_ng
    buf = io.BytesIO()
    np.lib.format.write_array(buf, (np.random.default_rng(1).random((300, 784)) < 0.2).astype(np.uint8))
    data = buf.getvalue()
    ours, theirs = zlib.compress(data, 6), zlib_ng.compress(data, 6)
    assert zlib.decompress(theirs) == data and ours != theirs
    assert hashlib.md5(ours).hexdigest() != hashlib.md5(theirs).hexdigest()
