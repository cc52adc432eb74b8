"""reference.yaml (mnist_vae.study.reference): its checks, and which model each setup binds to."""

import copy

import pytest
from conftest import REPO, raw_params

from mnist_vae.io import params, yamlfile
from mnist_vae.io.errors import DataError
from mnist_vae.study import reference

DOC = yamlfile.loads((REPO / "reference.yaml").read_text())


def bound(raw):
    return reference.bind(reference.check(copy.deepcopy(DOC)), reference.describe(params.validate(raw)))


def test_the_committed_params_bind_every_setup_to_its_model():
    out = bound(raw_params())
    assert out["bound"] == {"notebook-20d": "vae20d", "notebook-2d": "vae2d", "notebook-20d-b512": "vae20d-b512"}
    assert sorted(out["epochs"]) == ["vae20d", "vae2d"]
    assert len(out["numbers"]) == sum(len(s["numbers"]) for s in DOC["setups"].values()) == 11
    row = next(r for r in out["numbers"] if r["label"].startswith("uniform noise image KL (notebook), batch-512"))
    assert row["metric"] == "reports/models/vae20d-b512/anomaly.json:noise_image.kl"
    assert row["judged_by"] == "reports/models/vae20d-b512/anomaly.json:kl.noise.mean"


def test_a_renamed_model_keeps_its_reference_rows():
    raw = raw_params()
    raw["models"] = {("digits20" if k == "vae20d" else k): v for k, v in raw["models"].items()}
    raw["anomaly"]["models"] = ["digits20", "vae20d-b512"]
    out = bound(raw)
    assert out["bound"]["notebook-20d"] == "digits20" and "digits20" in out["epochs"]
    assert {r["metric"].split("/")[2] for r in out["numbers"]} == {"digits20", "vae2d", "vae20d-b512"}


def test_a_model_that_became_another_loses_them_and_the_batch_override_decides():
    raw = raw_params()
    raw["models"]["vae2d"]["latent_dim"] = 3
    del raw["models"]["vae20d-b512"]["train"]  # now the same model as vae20d: the first one binds
    raw["anomaly"]["models"] = ["vae20d"]
    out = bound(raw)
    assert out["bound"] == {"notebook-20d": "vae20d"}
    assert "vae2d" not in out["epochs"]
    raw["train"]["batch_size"] = 512  # the shared batch size: vae20d is now the notebook's setting
    assert bound(raw)["bound"] == {"notebook-20d-b512": "vae20d"}


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d["setups"]["notebook-2d"]["numbers"][0].update(value="abc"),
     "setups.notebook-2d.numbers[0].value (2-d test loss, epoch 10): must be a finite number, got 'abc'"),
    (lambda d: d["setups"]["notebook-20d"]["numbers"][0].update(metirc="x"),
     "setups.notebook-20d.numbers[0]: unknown key 'metirc'"),
    (lambda d: d["setups"]["notebook-20d"]["numbers"][1].update(metric="train.json"),
     "setups.notebook-20d.numbers[1].metric (20-d train loss, epoch 10): must be '<train.json | eval.json | "
     "anomaly.json>:<dotted key>'"),
    (lambda d: d["setups"]["notebook-20d"]["numbers"][1].update(metric="../../x.json:a"),
     "setups.notebook-20d.numbers[1].metric (20-d train loss, epoch 10): must be '<train.json"),
    (lambda d: d["setups"]["notebook-2d"]["epochs"]["test_loss"].append(float("nan")),
     "setups.notebook-2d.epochs.test_loss[10]: must be a finite"),
    (lambda d: d["setups"]["notebook-2d"]["epochs"]["test_loss"].pop(),
     "setups.notebook-2d.epochs: train_loss and test_loss must have one value"),
    (lambda d: d["setups"]["notebook-2d"]["model"].pop("batch_size"),
     "setups.notebook-2d.model: must have exactly latent_dim, encoder_hidden, decoder_hidden, batch_size"),
    (lambda d: d["setups"]["notebook-2d"]["model"].update(latent_dim=True),
     "setups.notebook-2d.model.latent_dim: must be a positive integer, got True"),
    (lambda d: d["setups"]["notebook-2d"]["model"].update(d["setups"]["notebook-20d"]["model"]),
     "setups.notebook-2d.model: is the same model as setups.notebook-20d"),
    (lambda d: d.update(numbers=[]), "numbers: unknown key (the file has `setups`)"),
    (lambda d: d.pop("setups"), "setups: the file must map `setups`"),
])
def test_reference_yaml_errors_name_the_entry_and_key(edit, needle):
    doc = copy.deepcopy(DOC)
    assert reference.check(doc) is doc
    edit(doc)
    with pytest.raises(DataError) as err:
        reference.check(doc)
    assert str(err.value).startswith(f"reference.yaml: {needle}"), str(err.value)
    assert str(err.value).endswith("restore it with `git checkout -- reference.yaml`")


def test_every_reference_metric_judged_by_and_image_spread_is_a_number_the_committed_run_wrote():
    """A misspelled key in reference.yaml would leave its row "not in the study" without a word."""
    import json

    from mnist_vae.study import spread

    bound = reference.load(str(REPO))
    assert bound["numbers"]
    for row in bound["numbers"]:
        for key in ("metric", "judged_by", "image_spread"):
            if key not in row:
                continue
            path, dotted = row[key].split(":", 1)
            flat = spread.flat_metrics({path: json.loads((REPO / path).read_text())})
            value = flat.get(row[key])
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (row["label"], key, row[key])


@pytest.mark.parametrize("extra, needle", [
    ({"judged_by": "anomaly.json:kl.noise.mean"}, "come together"),
    ({"image_spread": "anomaly.json:kl.noise.std"}, "come together"),
    ({"judged_by": "anomaly.json:kl.noise.mean", "image_spread": "kl.noise.std"}, "image_spread"),
])
def test_one_image_rows_need_both_the_set_and_its_spread(extra, needle):
    import yaml

    doc = yaml.safe_load((REPO / "reference.yaml").read_text())
    row = {"label": "one image", "value": 50.0, "metric": "anomaly.json:noise_image.kl", **extra}
    doc["setups"]["notebook-20d"]["numbers"] = [row]
    with pytest.raises(DataError, match=needle):
        reference.check(doc)
