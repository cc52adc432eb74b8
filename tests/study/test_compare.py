"""The experiments table of tools/compare.py (mnist_vae.study.compare) on a known `dvc exp show --json`;
tests/e2e/test_pipeline.py runs it after real experiments."""

from mnist_vae.study import compare


def state(rev, name, lr, latent, loss20, loss2, iwae2=None):
    metrics = {"reports/models/vae20d/train.json": {"data": {"test_loss": loss20, "epochs": 10}},
               "reports/models/vae2d/train.json": {"data": {"test_loss": loss2, "epochs": 10}}}
    if iwae2 is not None:
        metrics["reports/models/vae2d/eval.json"] = {"data": {"test_iwae_nll": iwae2}}
    params = {"train": {"lr": lr, "seed": 199}, "models": {"vae2d": {"latent_dim": latent, "encoder_hidden": [400, 150]},
                                                          "vae20d": {"latent_dim": 20}}}
    return {"rev": rev, "name": name, "data": {"params": {"params.yaml": {"data": params}}, "metrics": metrics},
            "error": None, "experiments": None}


DOC = [state("workspace", None, 0.001, 2, 87.97, 140.6, 136.1),
       {**state("a" * 40, "main", 0.001, 2, 87.97, 140.6, 136.1),
        "experiments": [{"revs": [state("b" * 40, "z3", 0.001, 3, 87.97, 131.234, 127.0)], "name": "z3"},
                        {"revs": [state("c" * 40, "slow-learning-rate-run", 0.0005, 2, 89.5, 141.0)],
                         "name": "slow-learning-rate-run"}]}]


def test_rows_are_the_workspace_the_baseline_and_its_experiments():
    rows = compare.experiments(DOC)
    assert [r["name"] for r in rows] == ["workspace", "main", "z3", "slow-learning-rate-run"]
    assert rows[2]["params"]["models.vae2d.latent_dim"] == 3
    assert rows[2]["metrics"]["reports/models/vae2d/train.json:test_loss"] == 131.234


def test_only_what_differs_under_short_names_in_80_columns():
    text = compare.table(compare.experiments(DOC), width=80)
    lines = text.splitlines()
    assert lines[0].split() == ["experiment", "vae2d.latent_dim", "train.lr", "vae20d", "loss", "vae2d", "loss",
                                "vae2d", "iwae"]
    assert lines[4].split() == ["z3", "3", "0.001", "87.97", "131.23", "127.00"]
    assert lines[5].split() == ["slow-learning~", "2", "0.0005", "89.50", "141.00", "-"]
    assert max(map(len, lines)) <= 80
    assert "seed" not in text and "encoder_hidden" not in text and "epochs" not in text  # unchanged


def test_a_table_wider_than_the_terminal_turns_over():
    text = compare.table(compare.experiments(DOC), width=40)
    lines = text.splitlines()
    assert lines[0].split() == ["workspace", "main", "z3", "slow-learning~"]
    assert lines[2].split() == ["vae2d.latent_dim", "2", "2", "3", "2"]
    assert [line.split()[0] for line in lines[2:]] == ["vae2d.latent_dim", "train.lr", "vae20d", "vae2d", "vae2d"]


def test_a_single_run_still_shows_its_results():
    text = compare.table(compare.experiments(DOC[:1]), width=80)
    assert text.splitlines()[2].split() == ["workspace", "87.97", "140.60", "136.10"]
