#!/usr/bin/env bash
# The GPU check, for a CUDA machine that has PyTorch, torchvision, numpy, scipy, PyYAML, tqdm and
# pytest but neither this project's venv nor DVC (the package runs from src/ via PYTHONPATH).
# It runs the step tests (the CUDA-graph one only runs there) and the training benchmark for 10
# epochs on the GPU: the reference-style loop and the project's, side by side.
#
#   MNIST_MIRROR=<folder with the four MNIST gz files> bash benchmarks/gpu.sh [OUT_PREFIX]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-reports/benchmark-gpu}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'
# -o addopts= : no pytest-xdist there (pyproject's addopts ask for it)
python3 -m pytest -q -p no:cacheprovider -o addopts= tests/core/test_step.py tests/core/test_objective.py \
  || echo "STEP TESTS FAILED"
python3 benchmarks/train_speed.py --epochs 10 --skip-dvc --device cuda --out "$out"
