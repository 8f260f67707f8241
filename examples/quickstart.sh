#!/usr/bin/env bash
# Install nodeguard into ./.venv and train the paper's ODE-Net on the bundled MNIST digits.
# About 3 minutes of training on a 2-core CPU, plus the install. Results land in the
# model registry (NODEGUARD_HOME, else ~/.cache/nodeguard); `nodeguard models` lists them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/nodeguard ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e .
fi
export PATH="$PWD/.venv/bin:$PATH"

nodeguard train mnist5k                 # ODE-Net, dopri5 at tol_train = 1e-3
nodeguard train mnist5k --arch resnet   # the ResNet baseline, same recipe
nodeguard models
