"""Stage render-gifs@<model>: GIFs of one model's training frames (data/tracking/<model>.npz)
into reports/images/<model>/gifs/.

reconstruction-all.gif and reconstruction-early.gif; for a model with manifold frames (2-d
latent) also manifold-all.gif and manifold-early.gif. Frame ranges, seconds per frame, upscale
factors and the size budget come from `gifs` in params.yaml. reports/models/<model>/gifs.json
gives each GIF's size, frames, grey levels, tolerance and worst per-frame PSNR against the 8-bit
frames (each GIF is decoded again and checked).
"""

import argparse

from mnist_vae.io import artifacts, cli, layout, params
from mnist_vae.io.errors import DataError, ParamsError


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.model_argument(ap, "a trained model's name, e.g. vae2d (reads data/tracking/<name>.npz)")
    args = ap.parse_args()
    args.model = cli.model_name(ap, args.model)
    p = params.load_for_stage()
    if not p.tracking.enabled:
        raise ParamsError("params: 'tracking.enabled' is false, so the train stages recorded no frames for "
                          "render-gifs; set it to true (or remove render-gifs from the pipeline)")
    cfg = p.gifs
    from mnist_vae.viz import gifs  # Pillow: only once the params are known good
    from mnist_vae.viz.figures import upscale

    out = layout.gifs_dir(args.model)
    frames = artifacts.read_npz(layout.tracking_frames(args.model), ["recon"])
    kinds = [("reconstruction", "recon", cfg.reconstruction_scale)]  # GIF and params name, frames' array
    if "manifold" in frames:
        kinds.append(("manifold", "manifold", cfg.manifold_scale))
    summary = {}
    for label, key, scale in kinds:
        for span in ("all", "early"):
            spec = getattr(cfg, f"{label}_{span}")
            path = f"{out}/{label}-{span}.gif"
            try:
                gif = gifs.encode_within(upscale(gifs.select_frames(frames[key], spec), scale),
                                         spec.seconds_per_frame, round(cfg.max_mb * 1e6), cfg.min_psnr_db)
            except DataError as err:
                raise DataError(f"{path}: {err}") from None
            artifacts.write_bytes(path, gif.data)
            summary[path.rsplit("/", 1)[-1]] = gif.summary(spec.seconds_per_frame)
            print(f"{path}: {len(gif.data) / 1e6:.2f} MB, {gif.frames} frames, {gif.levels} grey levels, "
                  f"worst PSNR {gif.worst_psnr_db:.1f} dB", flush=True)
    artifacts.write_json(layout.gifs_summary(args.model), summary)


if __name__ == "__main__":
    cli.run(main)
