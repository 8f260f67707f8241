#!/usr/bin/env bash
# Bring your own Neural ODE: a model trained outside nodeguard, imported and evaluated.
#   1. train an ODE-Net in the layout of torchdiffeq's examples/odenet_mnist.py with
#      torchdiffeq alone (examples/torchdiffeq_layout_mnist5k.py)          ~8 min on 2 cores
#   2. import its checkpoint (weights only) and classify the test split
#   3. attack 100 test digits with CW at its tol_train, export them      ~5 min
#   4. defend the exported files (V = 15, v_min = 12, public seed 0)
#   5. the ROC for V = 5, 10, 15, 20 and the security evaluation          ~25 min
# Run after `bash examples/quickstart.sh` has installed ./.venv. Files go to ./out/byo.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
out=out/byo
mkdir -p "$out"

[ -f "$out/model.pth" ] || python examples/torchdiffeq_layout_mnist5k.py --save "$out/model.pth"
nodeguard models show torchdiffeq-example-mnist5k > /dev/null 2>&1 ||
    nodeguard models import "$out/model.pth" --format torchdiffeq-example --dataset mnist5k
model=torchdiffeq-example-mnist5k
nodeguard attack cw --model "$model" --count 100 --export "$out/digits"
nodeguard defend "$out/digits/pristine" --model "$model" --votes 15 --vmin 12 --seed 0 --out "$out/defend-pristine.csv" |
    grep '^accepted ' | sed 's/^/pristine PNGs:    /'
nodeguard defend "$out/digits/adversarial" --model "$model" --votes 15 --vmin 12 --seed 0 --out "$out/defend-adversarial.csv" |
    grep '^accepted ' | sed 's/^/adversarial PNGs: /'
nodeguard roc --model "$model" --count 100 --votes 5,10,15,20 --seed 0 --plot "$out/roc.png"
# the attackers of the README's security figure, AutoAttack-rand at a fifth of its steps and a
# quarter of its EOT samples (its full budget, 100 x 20 per L2 budget, takes hours on a CPU)
nodeguard security --model "$model" --count 100 --kappas 0,0.05,0.1 --aa-eps 1.5 --aa-steps 20 --aa-eot-iter 5 --seed 0 --plot "$out/security.png"
