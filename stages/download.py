"""Stage download: the official MNIST and Fashion-MNIST gz files into data/raw/<dataset>/.

Sources in order: the directory in $MNIST_MIRROR / $FASHION_MNIST_MIRROR (when set), then the
public mirrors torchvision uses (not with MNIST_VAE_OFFLINE=1). Every file's md5 is checked
whichever source served it.
"""

import argparse
import logging

from mnist_vae.io import cli, data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/raw", help="folder that receives one subfolder per dataset")
    ap.add_argument("--datasets", nargs="+", default=list(data.DATASET_NAMES), choices=data.DATASET_NAMES,
                    help="which datasets to fetch (default: all)")
    args = ap.parse_args()
    for name in args.datasets:
        used = data.download(name, f"{args.out}/{name}")
        logging.getLogger("download").info("%s: %s", name, ", ".join(f"{f} <- {s}" for f, s in used.items()))


if __name__ == "__main__":
    cli.run(main)
