"""Stages train-20d / train-2d: train one model (its name under `models` in params.yaml).

Writes models/<name>.pt (config + weights), reports/metrics/train-<name>.json,
reports/plots/history-<name>.csv and data/tracking/<name>.npz (training frames).
"""

import argparse

import pandas as pd

from mnist_vae import artifacts, cli, params
from mnist_vae.model import checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model", help="a model name under `models` in params.yaml, e.g. vae20d")
    ap.add_argument("--data", default="data/binarized/mnist.npz")
    args = ap.parse_args()
    p = params.load()
    params.model_params(p, args.model)  # fail on an unknown name before any work
    from mnist_vae.training import fit

    out = fit(p, args.model, args.data)
    frames = out["frames"] if out["frames"] is not None else {}
    artifacts.write_npz(f"data/tracking/{args.model}.npz", **frames)
    artifacts.write_csv(f"reports/plots/history-{args.model}.csv", pd.DataFrame(out["history"]).drop(columns="seconds"))
    artifacts.write_json(f"reports/metrics/train-{args.model}.json", out["metrics"])
    artifacts.write_torch(f"models/{args.model}.pt", checkpoint(out["model"], train=p["train"]))


if __name__ == "__main__":
    cli.run(main)
