"""Stage render-gifs: GIFs of the training frames (data/tracking/<name>.npz) into reports/gifs/.

Per model: <name>-reconstruction-all.gif and <name>-reconstruction-early.gif; per model with
manifold frames (2-d latent): <name>-manifold-all.gif and <name>-manifold-early.gif.
Frame ranges, seconds per frame and upscale factors come from `gifs` in params.yaml.
"""

import argparse

from mnist_vae import artifacts, cli, params
from mnist_vae.errors import ParamsError


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracking", default="data/tracking", help="folder with the train stages' <name>.npz frames")
    ap.add_argument("--out", default="reports/gifs", help="folder that receives the GIFs")
    args = ap.parse_args()
    p = params.load_for_stage()
    if not p.tracking.enabled:
        raise ParamsError("params: 'tracking.enabled' is false, so the train stages recorded no frames for "
                          "render-gifs; set it to true (or remove render-gifs from the pipeline)")
    cfg = p.gifs
    from mnist_vae.frames import select_frames, upscale  # torch: only once the params are known good

    for name in p.models:
        frames = artifacts.read_npz(f"{args.tracking}/{name}.npz", ["recon"])
        kinds = [("reconstruction", "recon", cfg.recon_scale)]
        if "manifold" in frames:
            kinds.append(("manifold", "manifold", cfg.manifold_scale))
        for label, key, scale in kinds:
            for span in ("all", "early"):
                spec = getattr(cfg, f"{key}_{span}")
                artifacts.write_gif(f"{args.out}/{name}-{label}-{span}.gif",
                                    upscale(select_frames(frames[key], spec), scale), spec.seconds_per_frame)


if __name__ == "__main__":
    cli.run(main)
