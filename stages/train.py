"""Stage train@<model>: train one model (its name under `models` in params.yaml).

Writes models/<model>.safetensors (config + weights), reports/models/<model>/train.json (metrics),
reports/models/<model>/history.csv, reports/models/<model>/timings-train.json and
data/tracking/<model>.npz (training frames; empty when tracking.enabled is false).
"""

import argparse

from mnist_vae.io import artifacts, cli, layout, params
from mnist_vae.core import numerics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.model_argument(ap, "a model name under `models` in params.yaml, e.g. vae20d")
    ap.add_argument("--data", default="data/binarized/mnist.npz", help="the binarized MNIST .npz")
    args = ap.parse_args()
    args.model = cli.model_name(ap, args.model)
    p = params.load_for_stage()
    arch = p.model(args.model)  # fails on an unknown name before any work
    mnist = artifacts.read_npz(args.data, ["train_x", "test_x"])
    numerics.enter(p.numerics, p.train.device)  # before torch is imported
    from mnist_vae.core.model import checkpoint, save_checkpoint  # torch: only once params and data are known good
    from mnist_vae.core.training import fit

    out = fit(arch, p, mnist["train_x"][:p.data.train_limit], mnist["test_x"][:p.data.test_limit], name=args.model)
    artifacts.write_npz(layout.tracking_frames(args.model), **(out["frames"] or {}))
    artifacts.write_csv(layout.history(args.model),
                        {k: [h[k] for h in out["history"]] for k in out["history"][0] if k != "seconds"})
    artifacts.write_json(layout.train_metrics(args.model), out["metrics"])
    artifacts.write_json(layout.timings(args.model, "train"), out["timings"])
    save_checkpoint(layout.checkpoint(args.model), checkpoint(out["model"], train=arch.training(p.train).model_dump()))


if __name__ == "__main__":
    cli.run(main)
