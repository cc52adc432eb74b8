"""Where every per-model artifact lives.

reports/models/<model>/ holds what the report reads: the metrics, the small CSV tables, the GIF
summary and the timings, all small files kept in git (cache: false in dvc.yaml). The report
depends on that folder rather than on a hand-kept list of files, so adding a model to
params.yaml is the whole change, and the folder is complete in any clone (a DVC-cached file in
it would change the folder's hash wherever it has not been pulled, as under
`dvc repro --pull --allow-missing`).

reports/images/<model>/ holds the figures and GIFs the page links to (DVC-cached): the page
names them, it does not read them, so they are not deps of the report, and render-grids, whose
outputs are all cached, can be restored from DVC's run cache in another clone (a stage with an
uncached output cannot). Large arrays and checkpoints stay under models/ and data/ (DVC-cached,
never in git).
"""

from __future__ import annotations

MODELS_REPORTS = "reports/models"
IMAGES = "reports/images"
# the metrics files in a model's folder (the other files there are tables, summaries, timings)
METRICS_FILES = ("train.json", "eval.json", "anomaly.json")

# render-grids' figures of one model: file stem (reports/models/<model>/<stem>.png)
MODEL_FIGURES = ("manifold", "latent-scatter", "reconstructions", "prior-samples")
# anomaly-kl-stats' figures of one model: reports/models/<model>/anomaly-<stem>.png
ANOMALY_FIGURES = ("kl-histogram", "noise-image")
SCORES = ("kl", "neg_elbo")
OUTLIER_SETS = ("noise", "fashion")


def checkpoint(model: str) -> str:
    return f"models/{model}.pt"


def tracking_frames(model: str) -> str:
    return f"data/tracking/{model}.npz"


def evaluation_arrays(model: str) -> str:
    return f"data/evaluation/{model}.npz"


def anomaly_arrays(model: str) -> str:
    return f"data/anomaly/{model}.npz"


def model_dir(model: str) -> str:
    return f"{MODELS_REPORTS}/{model}"


def train_metrics(model: str) -> str:
    return f"{model_dir(model)}/train.json"


def history(model: str) -> str:
    return f"{model_dir(model)}/history.csv"


def eval_metrics(model: str) -> str:
    return f"{model_dir(model)}/eval.json"


def images_dir(model: str) -> str:
    return f"{IMAGES}/{model}"


def figure(model: str, stem: str) -> str:
    return f"{images_dir(model)}/{stem}.png"


def gifs_dir(model: str) -> str:
    return f"{images_dir(model)}/gifs"


def gifs_summary(model: str) -> str:
    """Each GIF's size, frames, grey levels and worst PSNR (written by render-gifs)."""
    return f"{model_dir(model)}/gifs.json"


def timings(model: str, stage: str) -> str:
    """How long a stage took for this model (train, evaluate): kept apart from the metrics,
    which hold results only, so that `dvc metrics diff` and `dvc exp show` show what changed."""
    return f"{model_dir(model)}/timings-{stage}.json"


def anomaly_metrics(model: str) -> str:
    return f"{model_dir(model)}/anomaly.json"


def anomaly_figure(model: str, stem: str) -> str:
    return f"{images_dir(model)}/anomaly-{stem}.png"


def roc_table(model: str, score: str, outliers: str) -> str:
    return f"{model_dir(model)}/roc-{score}-{outliers}.csv"


# The metrics files before they moved into reports/models/<model>/ (commits up to the move):
# old path -> new path, for reading an old commit's metrics or the spread study's records.
def legacy_metrics_path(path: str) -> str:
    prefix = "reports/metrics/"
    if not path.startswith(prefix):
        return path
    name = path[len(prefix):].removesuffix(".json")
    if name == "anomaly":
        return anomaly_metrics("vae20d")
    for kind, new in (("train-", train_metrics), ("eval-", eval_metrics), ("anomaly-", anomaly_metrics)):
        if name.startswith(kind):
            return new(name[len(kind):])
    return path
