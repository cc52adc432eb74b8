"""Stage anomaly-kl-stats@<model>: KL(q(z|x) || p(z)) and negative-ELBO anomaly scores of a
trained model (one of `anomaly.models` in params.yaml), for MNIST train/test, seeded uniform
noise and the Fashion-MNIST test set.

Writes reports/models/<model>/anomaly.json and roc-<score>-<set>.csv,
reports/images/<model>/anomaly-kl-histogram.png and anomaly-noise-image.png, and every score in
data/anomaly/<model>.npz.
"""

import argparse

from mnist_vae.io import artifacts, cli, layout, params
from mnist_vae.core import numerics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.model_argument(ap, "a trained model's name, e.g. vae20d (reads models/<name>.safetensors)")
    ap.add_argument("--mnist", default="data/binarized/mnist.npz", help="the binarized MNIST .npz")
    ap.add_argument("--fashion", default="data/binarized/fashion-mnist.npz", help="the binarized Fashion-MNIST .npz")
    args = ap.parse_args()
    args.model = cli.model_name(ap, args.model)
    p = params.load_for_stage()
    cfg = p.anomaly
    mnist = artifacts.read_npz(args.mnist, ["train_x", "test_x"])
    fashion = artifacts.read_npz(args.fashion, ["test_x"])
    numerics.enter(p.numerics, p.train.device)  # before torch is imported
    from mnist_vae.core import anomaly  # torch: only once params and data are known good
    from mnist_vae.viz import figures
    from mnist_vae.core.model import load_checkpoint
    from mnist_vae.core.runtime import keep_freed_memory, make_deterministic, resolve_device, to_tensor

    device = resolve_device(p.train.device)
    make_deterministic(cfg.seed)
    keep_freed_memory()
    model = load_checkpoint(layout.checkpoint(args.model), device)
    noise_image = anomaly.uniform_noise_images(1, cfg.seed)
    sets = {
        "train": mnist["train_x"][:p.data.train_limit],
        "test": mnist["test_x"][:p.data.test_limit],
        layout.NOISE: anomaly.uniform_noise_images(cfg.noise_images, cfg.seed + 1),
        layout.FASHION: fashion["test_x"][:p.data.test_limit],  # the first N of each test set
        "noise_image": noise_image,
    }
    tensors = {name: to_tensor(x, device) for name, x in sets.items()}
    kl = {name: anomaly.kl_scores(model, x, cfg.batch_size) for name, x in tensors.items()}
    elbo = {name: anomaly.elbo_scores(model, x, cfg.elbo_samples, cfg.seed + 2, cfg.batch_size)
            for name, x in tensors.items()}

    reports = {}
    for score_name, scores in ((layout.KL, kl), (layout.NEG_ELBO, elbo)):
        reports[score_name] = anomaly.detection_report(
            scores["train"], scores["test"], {o: scores[o] for o in layout.OUTLIER_SETS}, cfg.k)
        for other in layout.OUTLIER_SETS:
            fpr, tpr = anomaly.roc_curve(scores["test"], scores[other])
            artifacts.write_csv(layout.roc_table(args.model, score_name, other),
                                {"fpr": fpr, "tpr": tpr})
    st = reports[layout.KL]["train"]
    noise_kl = float(kl["noise_image"][0])
    reports["noise_image"] = {
        layout.KL: noise_kl,
        "kl_z_score": anomaly.z_score(noise_kl, st["fit_mean"], st["fit_std"]),
        "kl_percentile": anomaly.percentile_of(noise_kl, kl["train"]),
        layout.NEG_ELBO: float(elbo["noise_image"][0]),
    }
    reports["model"] = args.model

    artifacts.write_npz(layout.anomaly_arrays(args.model), **{f"{layout.KL}_{k}": v for k, v in kl.items()},
                        **{f"{layout.NEG_ELBO}_{k}": v for k, v in elbo.items()})
    artifacts.write_figure(layout.anomaly_figure(args.model, "kl-histogram"),
                           figures.kl_histogram(kl["train"], st["fit_mean"], st["fit_std"], st["threshold"],
                                                noise_kl, cfg.k), dpi=120)
    artifacts.write_png(layout.anomaly_figure(args.model, "noise-image"), figures.upscale(noise_image.reshape(28, 28) * 255, 8))
    artifacts.write_json(layout.anomaly_metrics(args.model), reports)


if __name__ == "__main__":
    cli.run(main)
