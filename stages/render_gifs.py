"""Stage render-gifs: GIFs of the training frames (data/tracking/<name>.npz) into reports/gifs/.

Per model: <name>-reconstruction-all.gif and <name>-reconstruction-early.gif; per model with
manifold frames (2-d latent): <name>-manifold-all.gif and <name>-manifold-early.gif.
Frame ranges, seconds per frame, upscale factors and the size budget come from `gifs` in
params.yaml. reports/gifs/summary.json gives each GIF's size, frames, grey levels, tolerance and
worst per-frame PSNR against the 8-bit frames (each GIF is decoded again and checked).
"""

import argparse

from mnist_vae import artifacts, cli, params
from mnist_vae.errors import DataError, ParamsError


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
    from mnist_vae import gifs
    from mnist_vae.frames import select_frames, upscale  # torch: only once the params are known good

    summary = {}
    for name in p.models:
        frames = artifacts.read_npz(f"{args.tracking}/{name}.npz", ["recon"])
        kinds = [("reconstruction", "recon", cfg.recon_scale)]
        if "manifold" in frames:
            kinds.append(("manifold", "manifold", cfg.manifold_scale))
        for label, key, scale in kinds:
            for span in ("all", "early"):
                spec = getattr(cfg, f"{key}_{span}")
                path = f"{args.out}/{name}-{label}-{span}.gif"
                try:
                    gif = gifs.encode_within(upscale(select_frames(frames[key], spec), scale),
                                             spec.seconds_per_frame, round(cfg.max_mb * 1e6), cfg.min_psnr_db)
                except DataError as err:
                    raise DataError(f"{path}: {err}") from None
                artifacts.write_bytes(path, gif.data)
                summary[path.rsplit("/", 1)[-1]] = gif.summary(spec.seconds_per_frame)
                print(f"{path}: {len(gif.data) / 1e6:.2f} MB, {gif.frames} frames, {gif.levels} grey levels, "
                      f"worst PSNR {gif.worst_psnr_db:.1f} dB", flush=True)
    artifacts.write_json(f"{args.out}/summary.json", summary)


if __name__ == "__main__":
    cli.run(main)
