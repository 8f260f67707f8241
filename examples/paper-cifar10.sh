#!/usr/bin/env bash
# The papers' CIFAR-10 experiments at full scale (256 filters, crop/flip/jitter
# augmentation, per-channel normalisation inside the model): for a machine with a GPU
# and CIFAR-10 in $DATA/cifar-10-batches-py (downloaded there when a network is available).
#   DATA=~/data bash examples/paper-cifar10.sh
set -euo pipefail
DATA=${DATA:-${NODEGUARD_DATA:-$HOME/data}}
DEVICE=${DEVICE:-cuda}

nodeguard train cifar10 --data-dir "$DATA" --device "$DEVICE" --epochs 100 --filters 256
nodeguard train cifar10 --data-dir "$DATA" --device "$DEVICE" --epochs 100 --filters 256 --arch resnet

nodeguard sweep --model odenet-cifar10 --baseline resnet-cifar10 --attack cw --count 1000 \
    --device "$DEVICE" --out paper-cifar10-sweep.md
nodeguard roc --model odenet-cifar10 --count 1000 --votes 5,10,15,20 --device "$DEVICE" --plot paper-cifar10-roc.png
