#!/usr/bin/env bash
# The GPU check, for a CUDA machine that has PyTorch, torchvision, numpy, scipy, PyYAML, tqdm and
# pytest but neither this project's venv nor DVC (the package runs from src/ via PYTHONPATH).
# It runs the step tests (the CUDA-graph one only runs there), the training benchmark for 10
# epochs on the GPU (the reference-style loop and the project's, side by side), and first the
# check that settles whether universal mode gives the CPU's bytes there (tools/device_check.py:
# a small profile on the CPU and on the GPU, every output's md5, then the committed evaluate stage
# on the GPU against dvc.lock). It needs data/binarized/*.npz and models/vae20d.safetensors carried
# over, and the project's runtime packages (numba, safetensors, zlib-ng, pydantic).
#
#   MNIST_MIRROR=<folder with the four MNIST gz files> bash benchmarks/gpu.sh [OUT_PREFIX]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-reports/benchmark-gpu}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'
python3 -c 'import numba, safetensors, zlib_ng, pydantic' \
  || echo "MISSING PACKAGES: pip install numba safetensors zlib-ng pydantic (versions: requirements.txt)"
python3 tools/device_check.py --device cuda || echo "DEVICE CHECK: BYTES DIFFER (see the lines above)"
# -o addopts= : no pytest-xdist there (pyproject's addopts ask for it)
python3 -m pytest -q -p no:cacheprovider -o addopts= tests/core/test_step.py tests/core/test_objective.py \
  || echo "STEP TESTS FAILED"
python3 benchmarks/train_speed.py --epochs 10 --skip-dvc --device cuda --out "$out"
