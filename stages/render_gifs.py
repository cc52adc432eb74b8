"""Stage render-gifs: GIFs of the training frames (data/tracking/<name>.npz) into reports/gifs/.

Per model: <name>-reconstruction-all.gif and <name>-reconstruction-early.gif; per model with
manifold frames (2-d latent): <name>-manifold-all.gif and <name>-manifold-early.gif.
Frame ranges, seconds per frame and upscale factors come from `gifs` in params.yaml.
"""

import argparse

import numpy as np

from mnist_vae import cli, params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tracking", default="data/tracking")
    ap.add_argument("--out", default="reports/gifs")
    args = ap.parse_args()
    p = params.load()
    cfg = p["gifs"]
    from mnist_vae.figures import select_frames, upscale, write_gif
    from mnist_vae.data import DataError

    for name in p["models"]:
        path = f"{args.tracking}/{name}.npz"
        try:
            frames = np.load(path)
        except FileNotFoundError:
            raise DataError(f"{path}: tracking frames not found (is tracking.enabled false?)") from None
        kinds = [("reconstruction", "recon", cfg["recon_scale"])]
        if "manifold" in frames.files:
            kinds.append(("manifold", "manifold", cfg["manifold_scale"]))
        for label, key, scale in kinds:
            for span in ("all", "early"):
                spec = cfg[f"{key}_{span}"]
                write_gif(f"{args.out}/{name}-{label}-{span}.gif",
                          upscale(select_frames(frames[key], spec), scale), spec["seconds_per_frame"])


if __name__ == "__main__":
    cli.run(main)
