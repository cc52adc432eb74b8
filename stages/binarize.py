"""Stage binarize: raw IDX files -> data/binarized/<dataset>.npz with train_x, train_y, test_x,
test_y (images N x 784 uint8 0/1: a pixel is 1 when byte / 255 >= data.threshold)."""

import argparse
import logging

from mnist_vae.io import cli, data, params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", default="data/raw", help="folder with one subfolder of gz files per dataset")
    ap.add_argument("--out", default="data/binarized", help="folder that receives <dataset>.npz")
    ap.add_argument("--datasets", nargs="+", default=list(data.DATASET_NAMES), choices=data.DATASET_NAMES,
                    help="which datasets to binarize (default: all)")
    args = ap.parse_args()
    p = params.load_for_stage()
    for name in args.datasets:
        shapes = data.binarize_dataset(f"{args.raw}/{name}", f"{args.out}/{name}.npz", p.data.threshold)
        logging.getLogger("binarize").info("%s: %s", name, shapes)


if __name__ == "__main__":
    cli.run(main)
