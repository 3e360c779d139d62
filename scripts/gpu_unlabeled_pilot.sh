#!/usr/bin/env bash
# The pilot of the unlabeled study's protocol v4 (scripts/unlabeled_study.py, its docstring has
# the design and the rule, written 2026-12-04 17:45 UTC before this ran), on the lent GPU: the
# seed-1 teacher (stage-2 RA-UNet w0.5, Adam 1e-3, 8,192 steps) and the seed-1 student alone
# (stage-2 ENet w0.25, 1,024 steps) on the 6 labeled cases, both scored on the 12 test cases in
# the reference organ box. Rule: teacher - alone >= 0.03 organ Dice and >= 0.10 tumor Dice (per
# case, dice_per_case_nonempty), else v4 does not run. fp32 (TF32 matmuls), 6 loader workers,
# trainer.deterministic=false; the teacher's best.ckpt (optimizer state dropped, weights and
# config kept) comes back in parts for the CPU study's --teacher-from.
#
#   bash scripts/gpu_unlabeled_pilot.sh                 # on the GPU machine; writes under $OUT
#   KDSEG_GPU_DRY=1 bash scripts/gpu_unlabeled_pilot.sh # a CPU dry run of the plumbing
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
W=${WORK:-/tmp/kdseg-ul4}
mkdir -p "$OUT" "$W"
exec > >(tee -a "$OUT/log.txt") 2>&1
export WANDB_MODE=disabled PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
PY=${PY:-python3}
stamp() { echo "[$(date -u +%H:%M:%S) t=$((SECONDS))s] $*"; }
best() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['best_checkpoint'])" "$R/$1/s1/summary.json"; }
kd() { local mod=$1; shift; "$PY" -c "import sys; from kdseg.cli.$mod import main; sys.exit(main())" "$@"; }

if [ "${KDSEG_GPU_DRY:-0}" = 1 ]; then
  ACC=cpu WORKERS=0 TSTEPS="trainer.max_epochs=1" SSTEPS="trainer.max_epochs=1" MAXT=00:00:02:00
else
  ACC=gpu WORKERS=6 TSTEPS="trainer.max_epochs=128" SSTEPS="" MAXT=00:00:06:30
fi
D=$W/data/labeled R=$W/runs
WIN="data.preprocess.window_level=organ data.preprocess.window=[-100,100]"
X="experiment=phantom_study_v3 data.root=$D $WIN"
T="trainer.accelerator=$ACC trainer.deterministic=false data.num_workers=$WORKERS logger=csv seed=1"

stamp "start; $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo no GPU)"
kd phantom dataset=lits root=$D n_cases=24 seed=0 workers=16 "params={tumor_mm_range: [15, 50], tumor_depth: 1}" | tail -1
"$PY" - "$D" <<'PY'
import json, sys
ids = [f"volume-{i}" for i in range(24)]
split = {"train": ids[:6], "val": ids[6:12], "test": ids[12:]}
open(f"{sys.argv[1]}/kdseg_split.json", "w").write(json.dumps(split, indent=1) + "\n")
PY
kd prepare $X workers=16 | tail -1
stamp "train"
kd train $X $T model=raunet model.width=0.5 optim.lr=1e-3 $TSTEPS +trainer.max_time=$MAXT hydra.run.dir=$R/teacher/s1 > "$W/teacher.log" 2>&1 &
PT=$!
kd train $X $T model=enet model.width=0.25 $SSTEPS hydra.run.dir=$R/alone/s1 > "$W/alone.log" 2>&1 &
PA=$!
wait $PT $PA  # not a bare wait: it would wait for the tee above too
stamp "trained"
for row in teacher alone; do
  kd evaluate $X ckpt="$(best $row)" split=test output_dir=$R/$row/s1/eval-test-full threads=8 | tail -1
done
"$PY" - "$R" <<'PY' | tee "$OUT/verdict.txt"
import json, sys
r = sys.argv[1]
s = {row: json.load(open(f"{r}/{row}/s1/eval-test-full/summary.json"))["summary"] for row in ("teacher", "alone")}
g = {k: s["teacher"][k]["dice_per_case_nonempty"] - s["alone"][k]["dice_per_case_nonempty"] for k in ("organ", "tumor")}
for row in s:
    print(row, {k: round(s[row][k]["dice_per_case_nonempty"], 4) for k in ("organ", "tumor")})
steps = {row: json.load(open(f"{r}/{row}/s1/summary.json"))["global_step"] for row in s}
print("steps", steps, "gap", {k: round(v, 4) for k, v in g.items()})
print("rule (organ >= 0.03 and tumor >= 0.10):", "PASS" if g["organ"] >= 0.03 and g["tumor"] >= 0.10 else "FAIL")
PY
"$PY" - "$(best teacher)" "$W/best.ckpt" <<'PY'
import sys, torch
ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
for key in ("optimizer_states", "lr_schedulers"):
    ckpt.pop(key, None)
torch.save(ckpt, sys.argv[2])
PY
K=$W/pack/teacher-s1; mkdir -p "$K/checkpoints"
cp "$W/best.ckpt" "$K/checkpoints/best.ckpt"
cp -r "$R/teacher/s1/config.yaml" "$R/teacher/s1/summary.json" "$R/teacher/s1/csv" "$R/teacher/s1/eval-test-full" "$K/"
cp "$W/teacher.log" "$W/alone.log" "$K/"
mkdir -p "$W/pack/alone-s1" && cp -r "$R/alone/s1/config.yaml" "$R/alone/s1/summary.json" "$R/alone/s1/csv" "$R/alone/s1/eval-test-full" "$W/pack/alone-s1/"
tar -C "$W/pack" -czf "$W/teacher.tgz" teacher-s1 alone-s1
split -b 15M -d "$W/teacher.tgz" "$OUT/teacher.tgz.part"
ls -la "$OUT"
stamp "done"
