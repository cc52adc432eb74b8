"""io/test_params.py"""

import copy
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from mnist_vae.io import params
from mnist_vae.io.params import ParamsError


@pytest.fixture
def raw():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_repository_params_are_valid(raw):
    p = params.validate(raw)
    assert p.models["vae2d"].decoder_sizes == [150, 400]  # null -> mirrored encoder
    assert p.models["vae20d"].decoder_sizes == [400]
    assert p.train.epochs == 10 and p.train.batch_size == 128 and p.train.seed == 199


@pytest.mark.parametrize("path, value, key", [
    (("train", "epochs"), 0, "train.epochs"),
    (("train", "epochs"), "10", "train.epochs"),
    (("train", "epochs"), 2.5, "train.epochs"),
    (("models", "vae20d", "latent_dim"), -1, "models.vae20d.latent_dim"),
    (("models", "vae2d", "encoder_hidden"), [400, 0], "models.vae2d.encoder_hidden[1]"),
    (("train", "lr"), 0, "train.lr"),
    (("train", "device"), "gpu", "train.device"),
    (("data", "threshold"), 1.5, "data.threshold"),
    (("tracking", "enabled"), "yes", "tracking.enabled"),
    (("manifold", "quantiles"), [0.9, 0.1], "manifold.quantiles"),
    (("gifs", "reconstruction_all", "step"), 0, "gifs.reconstruction_all.step"),
    (("models", "vae20d", "encoder_hidden"), [], "models.vae20d.encoder_hidden"),
    (("models", "vae2d", "decoder_hidden"), [], "models.vae2d.decoder_hidden"),
    (("gifs", "manifold_early", "start"), 300, "gifs.manifold_early.stop"),
    (("train", "step"), "fast", "train.step"),
    (("data", "train_limit"), 0, "data.train_limit"),
    (("evaluate", "iwae_images"), 0, "evaluate.iwae_images"),
    (("anomaly", "k"), 0, "anomaly.k"),
    (("train", "batch_size"), True, "train.batch_size"),
])
def test_bad_values_name_the_key(raw, path, value, key):
    bad = copy.deepcopy(raw)
    node = bad
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(ParamsError, match=key.replace("[", r"\[").replace("]", r"\]")):
        params.validate(bad)


def test_unknown_and_missing_keys(raw):
    bad = copy.deepcopy(raw)
    bad["train"]["epoch"] = 3
    with pytest.raises(ParamsError, match="unknown key 'train.epoch'"):
        params.validate(bad)
    bad = copy.deepcopy(raw)
    del bad["train"]["lr"]
    with pytest.raises(ParamsError, match="missing key 'train.lr'"):
        params.validate(bad)


def test_the_retired_portable_mode_stops_in_one_line_naming_the_key(raw):
    raw["numerics"]["mode"] = "portable"
    with pytest.raises(ParamsError) as err:
        params.validate(raw)
    assert str(err.value) == ("params: 'numerics.mode' portable was retired (universal mode is exact on every CPU, "
                              "within 1.3x of portable's time); use universal, or fast")


def test_cuda_device_names_are_accepted(raw):
    raw["train"]["device"] = "cuda:1"
    assert params.validate(raw).train.device == "cuda:1"


def test_stage_with_impossible_param_stops_before_writing(tmp_path, raw):
    """The train stage exits non-zero naming the key, and touches no output."""
    raw["train"]["epochs"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "train.py"), "vae20d"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "train.epochs" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize("name", ["vae 2d", "", "vae/2d", "vae\\2d", "../../escape2", "/tmp/x", ".", "..",
                                  "VAE2d", "-x", "a" * 41])
def test_a_model_name_that_cannot_name_files_and_stages_is_refused_naming_the_key(name):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["models"][name] = raw["models"]["vae2d"]
    with pytest.raises(ParamsError) as err:
        params.validate(raw)
    assert str(err.value).startswith(f"params: 'models' has the key {name!r}, which is not a usable model name")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["../../escape2", "/tmp/x", "a/b", "", ".."])
def test_no_output_path_can_leave_the_repository(name):
    """Every per-model output path is built by mnist_vae.io.layout, which checks the name once."""
    from mnist_vae.io import layout

    for build in (layout.checkpoint, layout.tracking_frames, layout.evaluation_arrays, layout.anomaly_arrays,
                  layout.model_dir, layout.train_metrics, layout.images_dir, layout.gifs_dir):
        with pytest.raises(ValueError, match="not a usable model name"):
            build(name)
    with pytest.raises(ValueError, match="not a usable model name"):
        layout.timings(name, "train")


def test_a_stage_run_by_hand_refuses_a_name_not_under_models(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "stages/train.py"), "../../escape2"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: params: no model")
    assert not (REPO.parent / "escape2.pt").exists()


# --- duplicate keys ---------------------------------------------------------------------------


def test_params_with_a_duplicated_key_is_refused_as_dvc_refuses_it(tmp_path):
    text = (REPO / "params.yaml").read_text().replace("  epochs: 10\n", "  epochs: 10\n  epochs: 3\n", 1)
    path = tmp_path / "params.yaml"
    path.write_text(text)
    line = text.splitlines().index("  epochs: 10") + 1
    with pytest.raises(ParamsError) as err:
        params.load(path)
    assert str(err.value) == (f"params: {path} is not valid YAML: duplicate key 'epochs' (lines {line} and "
                              f"{line + 1})")
