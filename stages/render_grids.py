"""Stage render-grids@<model>: figures of one trained model into reports/images/<model>/.

manifold.png (the latent manifold grid), latent-scatter.png (test-set encoder means coloured by
digit), reconstructions.png (originals over reconstructions) and prior-samples.png (decoded
samples from N(0, I)). For a latent of more than two dimensions the manifold and the scatter
show the first two (the others at 0); a 1-d latent gets a row of decoded images along its one
axis and its means per digit along it; so every figure exists whatever the latent size.
Everything is computed on the CPU, so figures are the same whatever device trained the models.
"""

import argparse

from mnist_vae.io import artifacts, cli, layout, params
from mnist_vae.core import numerics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.model_argument(ap, "a trained model's name, e.g. vae2d (reads models/<name>.safetensors)")
    ap.add_argument("--data", default="data/binarized/mnist.npz", help="the binarized MNIST .npz")
    args = ap.parse_args()
    args.model = cli.model_name(ap, args.model)
    p = params.load_for_stage()
    g = p.grids
    mnist = artifacts.read_npz(args.data, ["test_x", "test_y"])
    numerics.enter(p.numerics)  # before torch is imported (figures: always the CPU)
    import torch  # only once params and data are known good

    from mnist_vae.viz import figures
    from mnist_vae.core import frames
    from mnist_vae.core.inference import encode_all
    from mnist_vae.core.model import load_checkpoint
    from mnist_vae.core.runtime import make_deterministic, to_tensor

    name = args.model
    make_deterministic(g.seed)
    device = torch.device("cpu")  # small work: the CPU keeps figures identical across machines
    test_x = to_tensor(mnist["test_x"][:p.data.test_limit], device)
    test_y = mnist["test_y"][:p.data.test_limit]
    originals = test_x[list(p.tracking.reconstruction_indices)]
    model = load_checkpoint(layout.checkpoint(name), device)
    gen = torch.Generator().manual_seed(g.seed)
    with torch.no_grad():
        recon = frames.recon_frame(model, originals, numerics.randn((len(originals), model.latent_dim), generator=gen))
        prior = numerics.randn((g.prior_samples, model.latent_dim), generator=gen)
        samples = frames.to_uint8(frames.tile(model.decode(prior), nrow=g.prior_nrow))
    artifacts.write_png(layout.figure(name, "reconstructions"), figures.upscale(recon.numpy(), g.reconstruction_scale))
    artifacts.write_png(layout.figure(name, "prior-samples"), samples.numpy())
    m = p.manifold
    z = frames.manifold_latents(m.n, *m.quantiles, latent_dim=model.latent_dim)
    artifacts.write_png(layout.figure(name, "manifold"), frames.manifold_frame(model, z, m.n).numpy())
    mu, _ = encode_all(model, test_x)
    dims = "" if model.latent_dim <= 2 else f", first 2 of {model.latent_dim} dims"
    fig = figures.latent_scatter(mu.numpy(), test_y, f"{name}: test-set encoder means (n={len(test_y):,}{dims})")
    artifacts.write_figure(layout.figure(name, "latent-scatter"), fig, dpi=120)


if __name__ == "__main__":
    cli.run(main)
