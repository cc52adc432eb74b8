"""Stage evaluate@<model>: IWAE log-likelihood and active units of a trained model, written to
reports/models/<model>/eval.json (its time in timings-evaluate.json), with the per-image IWAE NLL and the per-dimension variance of
the encoder means in data/evaluation/<model>.npz."""

import argparse

from mnist_vae.io import artifacts, cli, layout, params
from mnist_vae.core import numerics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.model_argument(ap, "a trained model's name, e.g. vae20d (reads models/<name>.safetensors)")
    ap.add_argument("--data", default="data/binarized/mnist.npz", help="the binarized MNIST .npz")
    args = ap.parse_args()
    args.model = cli.model_name(ap, args.model)
    p = params.load_for_stage()
    numerics.enter(p.numerics, p.train.device)  # before torch is imported
    from mnist_vae.core.evaluation import evaluate_model  # torch: only once the params are known good
    from mnist_vae.core.model import load_checkpoint
    from mnist_vae.core.runtime import keep_freed_memory, make_deterministic, resolve_device, to_tensor

    device = resolve_device(p.train.device)
    make_deterministic(p.evaluate.seed)
    keep_freed_memory()
    model = load_checkpoint(layout.checkpoint(args.model), device)
    test_x = to_tensor(artifacts.read_npz(args.data, ["test_x"])["test_x"][:p.data.test_limit], device)
    result = evaluate_model(model, test_x, p.evaluate)
    artifacts.write_npz(layout.evaluation_arrays(args.model), **result["arrays"])
    artifacts.write_json(layout.eval_metrics(args.model), result["metrics"])
    artifacts.write_json(layout.timings(args.model, "evaluate"), result["timings"])


if __name__ == "__main__":
    cli.run(main)
