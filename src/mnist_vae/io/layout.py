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

import re

# A model name names files (models/<name>.safetensors, reports/models/<name>/...) and is a stage argument
# (train@<name>): lowercase letters, digits, '-' and '_', starting with a letter or digit, so it
# is one safe path segment and one shell word on Linux, macOS and Windows, and two names never
# collide on a case-insensitive disk.
MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
MODEL_NAME_RULE = "1 to 40 lowercase letters, digits, '-' or '_', starting with a letter or digit"


def check_model_name(name: object) -> str:
    """The name, or ValueError saying why it cannot name a model's files and stages."""
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a usable model name: use {MODEL_NAME_RULE} (it names the model's files "
                         "and its stages)")
    return name


MODELS_REPORTS = "reports/models"
IMAGES = "reports/images"
# the metrics files in a model's folder (the other files there are tables, summaries, timings)
METRICS_FILES = ("train.json", "eval.json", "anomaly.json")

# the anomaly study's scores and outlier sets: the one place their names are spelled (metrics
# keys, ROC table names, the page)
KL, NEG_ELBO = SCORES = ("kl", "neg_elbo")
NOISE, FASHION = OUTLIER_SETS = ("noise", "fashion")


def _path(template: str, *fields: str):
    """A path of one model's artifact: f(model, *values) fills {model} and then `fields` in order.
    The model name is checked here, once for every output path: no name can reach outside the
    repository's folders (an absolute path, '..', a separator)."""
    return lambda model, *values: template.format(model=check_model_name(model),
                                                  **dict(zip(fields, values, strict=True)))


checkpoint = _path("models/{model}.safetensors")
tracking_frames = _path("data/tracking/{model}.npz")
evaluation_arrays = _path("data/evaluation/{model}.npz")
anomaly_arrays = _path("data/anomaly/{model}.npz")

model_dir = _path(MODELS_REPORTS + "/{model}")  # what the report reads: small files, in git
train_metrics = _path(MODELS_REPORTS + "/{model}/train.json")
history = _path(MODELS_REPORTS + "/{model}/history.csv")
eval_metrics = _path(MODELS_REPORTS + "/{model}/eval.json")
anomaly_metrics = _path(MODELS_REPORTS + "/{model}/anomaly.json")
roc_table = _path(MODELS_REPORTS + "/{model}/roc-{score}-{outliers}.csv", "score", "outliers")
gifs_summary = _path(MODELS_REPORTS + "/{model}/gifs.json")  # each GIF's size, frames, levels, PSNR
# how long a stage (train, evaluate) took: apart from the metrics, which hold results only, so
# that `dvc metrics diff` and `dvc exp show` show only what an experiment changed
timings = _path(MODELS_REPORTS + "/{model}/timings-{stage}.json", "stage")

images_dir = _path(IMAGES + "/{model}")  # what the page links to: figures and GIFs, DVC-cached
gifs_dir = _path(IMAGES + "/{model}/gifs")
figure = _path(IMAGES + "/{model}/{stem}.png", "stem")
anomaly_figure = _path(IMAGES + "/{model}/anomaly-{stem}.png", "stem")
