"""Stage scripts run as DVC runs them, on bad input: one clear line, exit 2, nothing written.
No pipeline needed (not marked slow)."""

import gzip
import shutil
from pathlib import Path

import yaml
from conftest import (
    MNIST_MIRROR,
    REPO,
    assert_clean_failure,
    mirror_env,
    raw_params,
    run_stage,
)


def test_download_stage_rejects_a_flipped_byte(tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(MNIST_MIRROR, mirror)
    blob = bytearray((mirror / "train-labels-idx1-ubyte.gz").read_bytes())
    blob[1000] ^= 0x01
    (mirror / "train-labels-idx1-ubyte.gz").write_bytes(bytes(blob))
    proc = run_stage("download.py", "--datasets", "mnist", "--out", str(tmp_path / "raw"), cwd=tmp_path,
                     env=mirror_env(MNIST_MIRROR=str(mirror)))
    assert_clean_failure(proc, "train-labels-idx1-ubyte.gz", "md5 mismatch", "expected d53e105ee54ea40749a09fcbcd1e9432")
    assert list((tmp_path / "raw").iterdir()) == []  # no partial folder: the good first file went with it


def test_download_stage_missing_mirror_directory(tmp_path):
    proc = run_stage("download.py", "--datasets", "mnist", "--out", str(tmp_path / "raw"), cwd=tmp_path,
                     env=mirror_env(MNIST_MIRROR=str(tmp_path / "absent")))
    assert_clean_failure(proc, f"MNIST_MIRROR={tmp_path / 'absent'}: mirror directory does not exist",
                         f"check that MNIST_MIRROR={tmp_path / 'absent'} holds the four official gz files")
    assert not (tmp_path / "raw/mnist").exists()  # no empty folder left behind


def test_download_stage_offline_without_any_mirror_names_the_variable(tmp_path):
    env = mirror_env()
    del env["MNIST_MIRROR"]
    proc = run_stage("download.py", "--datasets", "mnist", "--out", str(tmp_path / "raw"), cwd=tmp_path, env=env)
    assert_clean_failure(proc, "mnist: MNIST_MIRROR is not set and MNIST_VAE_OFFLINE=1 turns the public mirrors off")
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


def test_binarize_stage_reports_truncated_gz_and_wrong_magic(tmp_path):
    raw = tmp_path / "raw/mnist"
    raw.mkdir(parents=True)
    for f in Path(MNIST_MIRROR).glob("*.gz"):
        shutil.copy(f, raw / f.name)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    run = lambda: run_stage("binarize.py", "--datasets", "mnist", "--raw", str(tmp_path / "raw"),  # noqa: E731
                            cwd=tmp_path)
    target = raw / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:2000])
    assert_clean_failure(run(), "t10k-labels-idx1-ubyte.gz: not a readable gzip file")
    payload = bytearray(gzip.decompress((Path(MNIST_MIRROR) / target.name).read_bytes()))
    payload[3] = 0x03  # labels file claiming to be an images file
    target.write_bytes(gzip.compress(bytes(payload)))
    assert_clean_failure(run(), "wrong IDX magic number 0x00000803")
    assert not (tmp_path / "data/binarized/mnist.npz").exists()


def test_stage_with_impossible_param_stops_before_writing(tmp_path):
    """The train stage exits non-zero naming the key, and touches no output."""
    raw = raw_params()
    raw["models"]["vae20d"]["encoder_hidden"] = []
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    line = assert_clean_failure(run_stage("train.py", "vae20d", cwd=tmp_path), "models.vae20d.encoder_hidden")
    assert "at least 1 item" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_stage_run_from_the_wrong_folder_says_where_to_run_it(tmp_path):
    proc = run_stage("evaluate.py", "vae20d", cwd=tmp_path)
    assert_clean_failure(proc, "params.yaml not found", "run stages from the repository root")


def test_stage_options_have_help():
    for script in sorted(p.name for p in (REPO / "stages").glob("*.py")):
        out = run_stage(script, "--help", cwd=REPO).stdout
        options = [line for line in out.splitlines() if line.strip().startswith("--") and "--help" not in line]
        section = out.split("positional arguments:", 1)[1].split("\n\n", 1)[0] if "positional arguments:" in out else ""
        positional = [line for line in section.splitlines() if line.startswith("  ") and line[2] != " "]
        assert options or positional, script
        for line in options + positional:  # every argument says what it is, on its line or the next
            assert len(line.split()) > 2 or out.split(line, 1)[1].splitlines()[1].strip(), (script, line)


def test_unknown_model_name_is_a_params_error(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    assert_clean_failure(run_stage("train.py", "vae99d", cwd=tmp_path), "no model 'models.vae99d'", "vae20d, vae2d")


def test_cuda_asked_for_on_a_machine_without_one(tmp_path):
    import numpy as np
    import pytest
    import torch

    from mnist_vae.io.artifacts import write_npz

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the case cannot arise")
    raw = raw_params()
    raw["train"]["device"] = "cuda"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "data/binarized").mkdir(parents=True)
    write_npz(tmp_path / "data/binarized/mnist.npz", train_x=np.zeros((4, 784), np.uint8),
              test_x=np.zeros((30, 784), np.uint8))
    line = assert_clean_failure(run_stage("train.py", "vae20d", cwd=tmp_path), "'train.device' is 'cuda'",
                                "CUDA is not available here")
    assert "use auto or cpu" in line
    assert not (tmp_path / "models").exists()


def test_a_gif_span_that_selects_no_frame_names_the_params():
    import numpy as np
    import pytest

    from mnist_vae.io.errors import DataError
    from mnist_vae.viz import gifs

    with pytest.raises(DataError, match="no frames selected.*gifs params"):
        gifs.encode_within(np.zeros((0, 4, 4), np.uint8), 0.1, 10**6, 35)
