#!/usr/bin/env bash
# The papers' MNIST experiments at full scale: for a machine with a GPU and MNIST in
# $DATA/MNIST/raw (downloaded there when a network is available).
#   DATA=~/data bash examples/paper-mnist.sh
set -euo pipefail
DATA=${DATA:-${NODEGUARD_DATA:-$HOME/data}}
DEVICE=${DEVICE:-cuda}

nodeguard train mnist --data-dir "$DATA" --device "$DEVICE" --epochs 30
nodeguard train mnist --data-dir "$DATA" --device "$DEVICE" --epochs 30 --arch resnet

# WIFS 2019: error and CW against tau (attacker at tau_test), and attacking at 1e-3
nodeguard sweep --model odenet-mnist --baseline resnet-mnist --attack cw --count 1000 \
    --device "$DEVICE" --out paper-mnist-sweep.md
nodeguard sweep --model odenet-mnist --attack cw --count 1000 --tol-attack 1e-3 \
    --device "$DEVICE" --out paper-mnist-decoupled.md
nodeguard attack pgd --model odenet-mnist --count 1000 --eps 0.1 --device "$DEVICE"

# ICPR 2021 workshops: tolerance randomization ROC, V in {5, 10, 15, 20}
nodeguard roc --model odenet-mnist --count 1000 --votes 5,10,15,20 --device "$DEVICE" --plot paper-mnist-roc.png
