#!/usr/bin/env bash
# The tau_train x tau_attack x tau_test grid (the WIFS'19 paper's future work) on the
# bundled digits, on the CPU:
#   1. train four ODE-Nets on mnist5k at tau_train = 1e-4, 1e-3, 1e-2, 1e-1
#      (the default recipe cut to 6 epochs each, to keep the whole run near 40 min on 2 cores)
#   2. attack 20 test digits of each with CW at tau_attack = 1e-4, 1e-3, 1e-2, 1e-1
#   3. classify every adversarial alone at tau_test = 1e-5 ... 1 and draw one heatmap per model
# Every model, attack set and cell lands in the registry: a second run computes nothing.
# Output: out/decoupling/grid.png, grid.md, grid.json.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/nodeguard ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e .
fi
export PATH="$PWD/.venv/bin:$PATH"
out=out/decoupling
mkdir -p "$out"
EPOCHS=${EPOCHS:-6}
COUNT=${COUNT:-20}

models=()
for tol_train in 1e-4 1e-3 1e-2 1e-1; do
    name="odenet-mnist5k-tt$tol_train"
    nodeguard train mnist5k --tol-train "$tol_train" --epochs "$EPOCHS" --name "$name" | tail -n 2
    models+=("$name")
done
list=$(IFS=,; echo "${models[*]}")
nodeguard sweep --models "$list" --tol-attack 1e-4,1e-3,1e-2,1e-1 --tols 1e-5,1e-4,1e-3,1e-2,1e-1,1 \
    --count "$COUNT" --out "$out/grid.md" --plot "$out/grid.png"
nodeguard sweep --models "$list" --tol-attack 1e-4,1e-3,1e-2,1e-1 --tols 1e-5,1e-4,1e-3,1e-2,1e-1,1 \
    --count "$COUNT" --json > "$out/grid.json"
