#!/bin/bash
# Training throughput of two checkouts of kdseg on the same work, alternated: ENet w0.25 (256
# steps), MobileNetV2 w0.25 (192) and RA-UNet w0.5 (64) on study v4's data and settings, one
# thread each, A B A B. Prints each run's median perf/slices_per_s and perf/data_wait_frac.
#   scripts/bench_train_ab.sh <tree A> <tree B> <v4 data root> <out dir>
# v4's data root: python scripts/phantom_study.py --protocol v4 --dir D --stages data  (D/data/lits)
# Each tree is a kdseg checkout (git worktree add --detach <dir> <commit>); both run with this
# repository's .venv and PYTHONPATH set to the tree.
set -e
A=$(realpath "$1") B=$(realpath "$2") D=$(realpath "$3") OUT=$(realpath -m "$4")
PY=$(cd "$(dirname "$0")/.." && pwd)/.venv/bin
export WANDB_MODE=disabled OMP_NUM_THREADS=1
mkdir -p "$OUT"
C="experiment=phantom_study_v3 data.root=$D paths.runs_dir=$OUT/runs seed=1"
C="$C data.preprocess.window_level=organ data.preprocess.window=[-100,100]"
for rep in 1 2; do
  for tree in "$A" "$B"; do
    for m in "enet model.width=0.25 trainer.max_epochs=4" \
             "mobilenetv2 model.width=0.25 trainer.max_epochs=3" \
             "raunet model.width=0.5 optim.lr=1e-3 trainer.max_epochs=1"; do
      name=$(echo $m | cut -d' ' -f1)-$([ "$tree" = "$A" ] && echo A || echo B)-$rep
      (cd "$tree" && PYTHONPATH="$tree" "$PY/kdseg-train" $C model=$m \
        hydra.run.dir="$OUT/runs/$name" > "$OUT/$name.log" 2>&1)
    done
  done
done
"$PY/python" - "$OUT" <<'PY'
import csv, statistics, sys
from pathlib import Path
print("| run | median slices/s | median data-wait share |\n|---|---|---|")
for f in sorted(Path(sys.argv[1], "runs").glob("*/csv/metrics.csv")):
    rows = [r for r in csv.DictReader(f.open()) if r.get("perf/slices_per_s")]
    sps = statistics.median(float(r["perf/slices_per_s"]) for r in rows)
    wait = statistics.median(float(r["perf/data_wait_frac"]) for r in rows)
    print(f"| {f.parts[-3]} | {sps:.1f} | {wait:.3f} |")
PY
