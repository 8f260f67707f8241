#!/usr/bin/env bash
# Make every figure (table) and picture of README.md and docs/ again, from a clean registry,
# with the commands that made them. Prints, for each file it writes, the command that made it.
#
#   bash examples/figures.sh              # every part, in the order below (hours on 2 cores)
#   bash examples/figures.sh security     # one part (the parts it needs run first)
#   bash examples/figures.sh --check      # the quickstart, then its figures against the README's
#                                         # ranges (examples/check_figures.py; about 20 min)
#
# Parts (the page that shows their figures):
#   quickstart   README, docs/results.md, docs/defense.md: the quickstart, its ROC picture
#   cw           README, docs/results.md: CW on the quickstart's model and its ROC
#   variation    README, docs/results.md: how the headline moves with the defense's draws
#                and the training seed (two more models: an hour on 2 cores)
#   tau          docs/tau-story.md: the tau tables, tau_drift, the paper recipe
#   decoupling   docs/tau-story.md: the tau_train x tau_attack x tau_test grid picture
#   certify      docs/security.md: randomized smoothing, both noise models, the picture
#   security     README, docs/security.md: the security table and picture
#   security-variation  README, docs/security.md: how the security table moves with the
#                defense's draws, the attackers' seeds, the training seed and the 8-bit
#                rounding (needs variation's models; about an hour on 2 cores)
#   security-all docs/security.md: the security table on every test digit, two 1-thread
#                ranks under torchrun (about 2 hours on 2 cores), their time against one
#                process (A B A B, 200 digits: half an hour), and why EOT-CW's 8-bit rows
#                are weaker (minutes)
#   budget       docs/security.md: AutoAttack-rand at the reduced and the full budget
#   public-seed  docs/inputs.md: what a known seed gives away
#   byo          docs/library.md: a model trained by torchdiffeq alone, imported
#   speed        docs/speed.md, docs/attacks.md: the benches (timings: an idle machine)
#   distributed  docs/distributed.md: torchrun against one process, DDP training
#
# NODEGUARD_HOME defaults to a fresh folder (printed at the start); set it to that folder
# to continue an interrupted run: every result is reused. Files go to out/figures
# (FIGURES=DIR to change); the pictures the docs show are in examples/ under the same
# names: compare, then copy the new ones there. The figures move with the machine, the
# threads and the seed: the docs say which machine made theirs.
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
parts=()
for argument in "$@"; do
    if [ "$argument" = "--check" ]; then
        check=1
    else
        parts+=("$argument")
    fi
done
set -- "${parts[@]+"${parts[@]}"}"
home=${NODEGUARD_HOME:-}
if [ "$check" -eq 1 ] && [ -n "$home" ]; then
    echo "--check reruns on an empty registry: NODEGUARD_HOME=$home is ignored" >&2
    home=""
fi
if [ -z "$home" ]; then
    home=$(mktemp -d "${TMPDIR:-/tmp}/nodeguard-figures.XXXXXX")
fi
export NODEGUARD_HOME=$home
figures=${FIGURES:-out/figures}
mkdir -p "$figures"
echo "NODEGUARD_HOME=$NODEGUARD_HOME"
echo "figures in $figures"

model=odenet-mnist5k
all_parts=(quickstart cw variation tau decoupling certify security security-variation security-all budget public-seed
    byo speed distributed)

say() {  # say FILE COMMAND...: which command makes FILE
    local file=$1
    shift
    printf '\n==> %s\n   ' "$file"
    printf ' %q' "$@"
    printf '\n'
}

writes() {  # writes FILE COMMAND...: run the command; FILE is what it writes itself (--plot, --out)
    say "$@"
    shift
    "$@"
}

record() {  # record FILE COMMAND...: run the command, its stdout into FILE (and shown)
    local file=$1
    say "$@"
    shift
    "$@" | tee "$file"
}

timed() {  # timed FILE COMMAND...: run the command, append its wall time in seconds to FILE
    local file=$1 start end
    say "$@"
    shift
    start=$(date +%s.%N)
    "$@"
    end=$(date +%s.%N)
    printf '%s\t%s\n' "$(awk -v start="$start" -v end="$end" 'BEGIN { printf "%.1f", end - start }')" "$*" |
        tee -a "$file"
}

timed_into() {  # timed_into FILE OUT COMMAND...: run the command, its stdout into OUT, its wall time appended to FILE
    local file=$1 out=$2 start end
    shift 2
    say "$out" "$@"
    start=$(date +%s.%N)
    "$@" >"$out"
    end=$(date +%s.%N)
    printf '%s\t%s\n' "$(awk -v start="$start" -v end="$end" 'BEGIN { printf "%.1f", end - start }')" "$*" |
        tee -a "$file"
}

copy() {  # copy FROM TO: a picture a script wrote, under the name the docs give it
    cp "$1" "$2"
    echo "    $1 -> $2"
}

done_parts=" "
need() {  # need PART: run PART once
    case "$done_parts" in *" $1 "*) return 0 ;; esac
    done_parts="$done_parts$1 "
    "part_${1//-/_}"
}

part_quickstart() {
    # installs ./.venv on the first run; trains odenet-mnist5k, attacks every test digit
    # with FMN, defends the PNGs, draws the ROC
    record "$figures/quickstart.txt" bash examples/quickstart.sh
    export PATH="$PWD/.venv/bin:$PATH"
    copy out/quickstart/roc.png "$figures/quickstart-roc.png"
    record "$figures/quickstart-model.json" nodeguard models show "$model" --json
    record "$figures/quickstart-attack-fmn.json" nodeguard attack fmn --model "$model" --count 1000 --json
    record "$figures/quickstart-roc-fmn.json" \
        nodeguard roc --model "$model" --count 1000 --attack fmn --votes 5,10,15,20 --seed 0 --json
    record "$figures/quickstart-defend-pristine.json" nodeguard defend out/quickstart/digits/pristine \
        --model "$model" --votes 15 --vmin 12 --seed 0 --json
    record "$figures/quickstart-defend-adversarial.json" nodeguard defend out/quickstart/digits/adversarial \
        --model "$model" --votes 15 --vmin 12 --seed 0 --json
}

part_cw() {
    need quickstart
    record "$figures/quickstart-attack-cw.json" nodeguard attack cw --model "$model" --count 100 --json
    writes "$figures/quickstart-roc-cw.png" nodeguard roc --model "$model" --count 100 --attack cw \
        --votes 5,10,15,20 --seed 0 --plot "$figures/quickstart-roc-cw.png"
    record "$figures/quickstart-roc-cw.json" \
        nodeguard roc --model "$model" --count 100 --attack cw --votes 5,10,15,20 --seed 0 --json
}

part_variation() {
    need quickstart
    local seed
    # the same model and adversarials, other public draws of the defense
    for seed in 1 2 3 4; do
        record "$figures/variation-roc-draws$seed.json" \
            nodeguard roc --model "$model" --count 1000 --attack fmn --votes 5,10,15,20 --seed "$seed" --json
    done
    # other training seeds: another model, its own FMN adversarials, the quickstart's draws
    for seed in 1 2; do
        # reuses a finished model, continues an interrupted one
        writes "(registry)" nodeguard train mnist5k --seed "$seed" --name "$model-seed$seed"
        record "$figures/variation-model$seed.json" nodeguard models show "$model-seed$seed" --json
        record "$figures/variation-attack-model$seed.json" nodeguard attack fmn --model "$model-seed$seed" \
            --count 1000 --json
        record "$figures/variation-roc-model$seed.json" nodeguard roc --model "$model-seed$seed" --count 1000 \
            --attack fmn --votes 5,10,15,20 --seed 0 --json
    done
    record "$figures/variation.md" python examples/variation_table.py "$figures"
    record "$figures/variation-rounding.json" python examples/rounding_roc.py --model "$model" --count 1000 \
        --attack fmn --seed 0
    record "$figures/variation-fmn-seed1.json" nodeguard attack fmn --model "$model" --count 100 --seed 1 --json
}

part_tau() {
    need quickstart
    writes "(registry)" nodeguard train mnist5k --arch resnet # reused when finished
    writes "$figures/tau.md" nodeguard sweep --model "$model" --baseline resnet-mnist5k --attack cw --count 50 \
        --out "$figures/tau.md" --plot "$figures/tau.png"
    record "$figures/tau-drift.txt" python examples/tau_drift.py --model "$model" --count 300
    # the paper's settings; the docs' 7.2% was measured without dropout: --dropout 0 gives those settings
    writes "(registry)" nodeguard train mnist5k --recipe paper --dropout 0 --name odenet-mnist5k-paper-nodropout
    writes "$figures/tau-paper-recipe.md" nodeguard sweep --model odenet-mnist5k-paper-nodropout \
        --tols 1e-5,1e-4,1e-3,1e-2,1e-1,1 --out "$figures/tau-paper-recipe.md"
}

part_decoupling() {
    need quickstart
    record "$figures/decoupling.txt" bash examples/decoupling.sh
    copy out/decoupling/grid.png "$figures/decoupling-grid.png"
    copy out/decoupling/grid.md "$figures/decoupling-grid.md"
}

part_certify() {
    need quickstart
    local sigma
    for sigma in 0.25 0.5; do
        writes "(registry)" nodeguard train mnist5k --noise-sigma "$sigma" # reused when finished
        record "$figures/certify-$sigma.txt" nodeguard certify --sigma "$sigma" --model "$model-noise$sigma"
        record "$figures/certify-$sigma.json" nodeguard certify --sigma "$sigma" --model "$model-noise$sigma" --json
    done
    # both cached reports in one picture
    writes "$figures/certify.png" python - "$figures/certify.png" <<'EOF'
import sys
from pathlib import Path

import nodeguard as ng
from nodeguard.reporting.security_plots import plot_certify

reports = [
    ng.run_certify(ng.CertifySettings(sigma=sigma), model=f"odenet-mnist5k-noise{sigma:g}") for sigma in (0.25, 0.5)
]
plot_certify(reports, Path(sys.argv[1]))
EOF
}

part_security() {
    need cw
    need certify
    local options=(--model "$model" --count 100 --seed 0 --votes 15
        --aa-steps 20 --aa-eot-iter 5 --square-queries 500 --square-draws 2 --tol-ranges 1e-6:1
        --certify 0.5 --certify-model "$model-noise0.5")
    record "$figures/security.txt" nodeguard security "${options[@]}" --plot "$figures/security.png"
    record "$figures/security.json" nodeguard security "${options[@]}" --json
}

part_security_variation() {
    need variation
    local seed options=(--count 100 --votes 15 --aa-steps 20 --aa-eot-iter 5 --square-queries 500 --square-draws 2)
    # the same attack sets judged by other public draws of the defense
    for seed in 0 1 2 3 4; do
        record "$figures/security-draws$seed.json" nodeguard security --model "$model" "${options[@]}" --seed "$seed" --json
    done
    # the attackers that draw (EOT-CW, AutoAttack-rand, Square) with other seeds
    for seed in 1 2; do
        record "$figures/security-attack$seed.json" nodeguard security --model "$model" "${options[@]}" --seed 0 \
            --attack-seed "$seed" --json
    done
    # the models trained with other seeds, their own attack sets
    for seed in 1 2; do
        record "$figures/security-model$seed.json" nodeguard security --model "$model-seed$seed" "${options[@]}" \
            --seed 0 --json
    done
    # the 8-bit rounding: the same attack sets' float adversarials judged by the same defense
    local name
    for name in "$model" "$model-seed1" "$model-seed2"; do
        record "$figures/security-rounding-$name.json" python examples/rounding_security.py --model "$name" \
            "${options[@]}" --seed 0 --json
    done
    record "$figures/security-variation.md" python examples/security_variation_table.py "$figures"
}

part_budget() {
    need quickstart
    local options=(--model "$model" --count 20 --seed 0 --votes 15 --kappas '' --no-eot --no-square --aa-eps 1.5)
    timed "$figures/budget-seconds.tsv" nodeguard security "${options[@]}" --aa-steps 20 --aa-eot-iter 5 --threads 1
    record "$figures/budget-reduced.txt" nodeguard security "${options[@]}" --aa-steps 20 --aa-eot-iter 5
    timed "$figures/budget-seconds.tsv" nodeguard security "${options[@]}" --threads 1
    record "$figures/budget-full.txt" nodeguard security "${options[@]}"
}

part_public_seed() {
    need cw
    local set
    set=$(nodeguard attack cw --model "$model" --count 100 --json | python -c 'import json, sys; print(json.load(sys.stdin)["set"])')
    record "$figures/public-seed.json" python examples/public_seed_attack.py --model "$model" --set "$set" --tries 20
}

part_byo() {
    need quickstart
    rm -f out/byo/model.pth # a model left by an earlier run would be reused: train it again
    record "$figures/byo.txt" bash examples/byo.sh
    copy out/byo/roc.png "$figures/byo-roc.png"
    copy out/byo/security.png "$figures/byo-security.png"
}

part_speed() {
    need quickstart
    # each bench installs its reference implementations (benches/requirements.txt) when missing
    record "$figures/bench-solver.json" python benches/solver.py --model "$model"
    record "$figures/bench-attack.json" python benches/attack.py --model "$model" --count 50
    record "$figures/bench-attack-cw-references.json" python benches/attack.py --model "$model" --count 20 --cw-references
    record "$figures/bench-defend.json" python benches/defend.py --model "$model"
    record "$figures/bench-threads.json" python benches/threads.py --model "$model"
}

fresh_home() {  # fresh_home: a new registry holding only the quickstart's model (no results); prints its path
    local fresh
    fresh=$(mktemp -d "${TMPDIR:-/tmp}/nodeguard-fresh.XXXXXX") || return 1
    mkdir -p "$fresh/models" || return 1
    cp -r "$NODEGUARD_HOME/models/$model" "$fresh/models/" || return 1
    rm -rf "$fresh/models/$model/results"
    echo "$fresh"
}

part_security_all() {
    need quickstart
    local options=(--model "$model" --seed 0 --votes 15 --aa-steps 20 --aa-eot-iter 5 --square-queries 500
        --square-draws 2)
    local two_ranks=(torchrun --standalone --nproc-per-node 2 -m nodeguard)
    # one process (torch's threads) against two ranks of one thread, A B A B, each on an
    # empty result store: the first 200 digits, CW, AutoAttack-rand and both Squares at L2 1
    local round fresh rows=(--count 200 --kappas 0.05 --no-eot --aa-eps 1 --budget-check 0 --json)
    for round in 1 2; do
        fresh=$(fresh_home)
        timed_into "$figures/security-ranks-seconds.tsv" "$figures/security-ranks-one-$round.json" \
            env NODEGUARD_HOME="$fresh" nodeguard security "${options[@]}" "${rows[@]}"
        rm -rf "$fresh"
        fresh=$(fresh_home)
        timed_into "$figures/security-ranks-seconds.tsv" "$figures/security-ranks-two-$round.json" \
            env NODEGUARD_HOME="$fresh" "${two_ranks[@]}" security "${options[@]}" "${rows[@]}" --threads 1
        rm -rf "$fresh"
    done
    # every test digit, two ranks, on an empty result store (kept: its registry is printed)
    fresh=$(fresh_home)
    echo "the 1000-digit run's registry: $fresh"
    timed_into "$figures/security-all-seconds.tsv" "$figures/security-all.json" env NODEGUARD_HOME="$fresh" \
        "${two_ranks[@]}" security "${options[@]}" --count 1000 --threads 1 --plot "$figures/security-all.png" --json
    # the same attack sets: why EOT-CW's 8-bit adversarials get fewer digits through than its floats
    record "$figures/rounding-cause.txt" env NODEGUARD_HOME="$fresh" python examples/rounding_cause.py \
        --model "$model" --count 1000 --seed 0 --votes 15
}

part_distributed() {
    need quickstart
    # A B A B A B on 40 digits; another --seed each run makes another attack set key, so
    # every run starts on an empty result (CW draws nothing at random: the work is the same)
    local pair seed
    for pair in 1 2 3; do
        seed=$((100 + 2 * pair))
        timed "$figures/distributed-seconds.tsv" torchrun --nproc-per-node 2 -m nodeguard attack cw \
            --model "$model" --count 40 --threads 1 --seed "$seed"
        seed=$((seed + 1))
        timed "$figures/distributed-seconds.tsv" nodeguard attack cw --model "$model" --count 40 --threads 1 --seed "$seed"
    done
    timed "$figures/distributed-seconds.tsv" torchrun --nproc-per-node 2 -m nodeguard train mnist5k \
        --name odenet-mnist5k-ddp --threads 1
    timed "$figures/distributed-seconds.tsv" torchrun --nproc-per-node 2 -m nodeguard train mnist5k \
        --epochs 6 --name odenet-mnist5k-ddp-6epochs --threads 1
    record "$figures/distributed-models.txt" nodeguard models
}

if [ "$check" -eq 1 ] && [ "$#" -eq 0 ]; then
    set -- quickstart
fi
if [ "$#" -eq 0 ]; then
    set -- "${all_parts[@]}"
fi
for part in "$@"; do
    case " ${all_parts[*]} " in
        *" $part "*) ;;
        *)
            echo "unknown part '$part'; the parts: ${all_parts[*]}" >&2
            exit 2
            ;;
    esac
done
# the registry's commands (first run: the quickstart installs ./.venv)
if [ -x .venv/bin/nodeguard ]; then
    export PATH="$PWD/.venv/bin:$PATH"
fi
for part in "$@"; do
    need "$part"
done
echo
echo "done: the figures are in $figures; the registry is $NODEGUARD_HOME"
if [ "$check" -eq 1 ]; then
    echo
    echo "the figures against the README's (examples/readme-figures.yaml):"
    python examples/check_figures.py "$figures"
fi
