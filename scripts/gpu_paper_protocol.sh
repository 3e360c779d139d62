#!/usr/bin/env bash
# The EMKD paper's protocol on phantoms, on one GPU (issue 11's GPU check): full-width RA-UNet
# (22 M) and ENet (0.35 M) at a fixed 384 x 384 crop of 512 x 512 slices, the binary tumor task,
# target slices only, batch 16, Adam 1e-2 cosine over 30 epochs, 16-mixed (conf/experiment/
# paper_lits.yaml, unchanged), seed 123. Runs: RA-UNet alone, ENet alone, ENet + EMKD from that
# RA-UNet, one after the other so that each one's throughput is measured with the GPU to itself;
# then kdseg-eval protocol=paper on the test split. Reports what issue 11 asks: slices per second,
# GPU memory, whether the data loader keeps the GPU busy (the loop's data-wait share from
# kdseg's StepTimer, and nvidia-smi's utilization sampled every 0.5 s) and the Dice.
#
# Phantoms: 40 LiTS-like cases at 512 x 512, 48-64 slices, tumors 15-50 mm kept whole
# (tumor_depth 1, pilot P13's tumors), no non-square matrices (the paper crops 384 x 384 out of
# 512 x 512). Everything else is the generator's default.
#
# Usage on the lent GPU machine (see docs/gpu.md for the exact `run` call, wheels in .whl/):
#   bash scripts/gpu_paper_protocol.sh            # writes under $OUT (or ./gpu-out)
# A CPU dry run of the plumbing (tiny phantoms, 2 epochs, no GPU):
#   KDSEG_GPU_DRY=1 bash scripts/gpu_paper_protocol.sh
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}  # what comes back: log.txt, smi.csv, result.json, runs.tar.gz
W=${WORK:-/tmp/kdseg-gpu}
K=$W/keep  # per-run logs, metrics and configs, packed into runs.tar.gz at the end
mkdir -p "$OUT" "$W" "$K"
LOG=$OUT/log.txt
exec > >(tee -a "$LOG") 2>&1
export WANDB_MODE=disabled PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
PY=${PY:-python3}
stamp() { echo "[$(date -u +%H:%M:%S) t=$((SECONDS))s] $*"; }
kd() {  # kd <cli module> args...: a kdseg console script without installing kdseg
  local mod=$1; shift
  "$PY" -c "import sys; from kdseg.cli.$mod import main; sys.exit(main())" "$@"
}

if [ "${KDSEG_GPU_DRY:-0}" = 1 ]; then
  N=6 SIZE=128 SLICES="[12, 16]" EPOCHS=2 CROP="[96,96]" WORKERS=2 ACC=cpu PREC=32-true
  MAXT=00:00:02:00
else
  N=40 SIZE=512 SLICES="[48, 64]" EPOCHS=30 CROP="[384,384]" WORKERS=8 ACC=gpu PREC=16-mixed
  MAXT=00:00:02:10  # a guard per run, so that the whole script ends inside 8 minutes
fi
D=$W/data/lits R=$W/runs
P="{size_range: [$SIZE, $SIZE], nonsquare_prob: 0.0, slices_range: $SLICES, tumor_mm_range: [15, 50], tumor_depth: 1}"
X="experiment=paper_lits data.root=$D data.preprocess.crop_size=$CROP"
T="trainer.accelerator=$ACC trainer.precision=$PREC trainer.max_epochs=$EPOCHS +trainer.max_time=$MAXT trainer.deterministic=false trainer.enable_progress_bar=false data.num_workers=$WORKERS logger.wandb.enabled=false"

stamp "start; $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo no GPU)"
"$PY" -c "import torch, pytorch_lightning as pl, monai; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'lightning', pl.__version__, 'monai', monai.__version__)"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -lms 500 > "$OUT/smi.csv" &
  SMI=$!
fi

stamp "phantoms"
kd phantom dataset=lits root=$D n_cases=$N seed=0 workers=16 "params=$P" | tail -2
kd prepare $X paths.runs_dir=$R workers=16 | tail -2

train() {  # train <name> <cli> args...
  local name=$1 cli=$2; shift 2
  stamp "BEGIN $name"
  kd "$cli" $X $T paths.runs_dir=$R hydra.run.dir=$R/$name "$@" > "$K/$name.log" 2>&1
  local rc=$?
  stamp "END $name rc=$rc"
  tail -3 "$K/$name.log"
}
# KDSEG_GPU_RUNS: which runs (default all three); KDSEG_TEACHER_LR: the teacher's Adam rate
# instead of the paper's 1e-2 (the second GPU call of 2026-12-04 used 1e-3, pilot P13's)
RUNS=${KDSEG_GPU_RUNS:-raunet enet enet-emkd}
TLR=${KDSEG_TEACHER_LR:+optim.lr=$KDSEG_TEACHER_LR}
has() { [[ " $RUNS " == *" $1 "* ]]; }
has raunet && train raunet train model=raunet seed=123 $TLR
has enet && train enet train model=enet seed=123
if has enet-emkd && [ -f $R/raunet/checkpoints/best.ckpt ]; then
  train enet-emkd distill student=enet distill=emkd teacher.ckpt=$R/raunet/checkpoints/best.ckpt seed=123
fi
[ -n "${SMI:-}" ] && kill $SMI

for name in raunet enet enet-emkd; do
  ck=$R/$name/checkpoints/best.ckpt
  [ -f $ck ] || continue
  stamp "eval $name"
  kd evaluate $X ckpt=$ck protocol=paper split=test threads=16 output_dir=$R/$name/eval-paper > "$K/eval-$name.log" 2>&1 || tail -3 "$K/eval-$name.log"
done

stamp "collect"
"$PY" - "$R" "$OUT" "$K" <<'EOF'
import json, sys
from pathlib import Path
runs, out, keep = (Path(a) for a in sys.argv[1:4])
result = {}
for name in ("raunet", "enet", "enet-emkd"):
    run = runs / name
    entry = {}
    if (run / "summary.json").exists():
        s = json.loads((run / "summary.json").read_text())
        entry.update(steps=s["global_step"], epochs=s["epochs"], best_val=s["best_score"], throughput=s.get("throughput"))
    ev = run / "eval-paper" / "summary.json"
    if ev.exists():
        entry["test"] = json.loads(ev.read_text())["summary"]
    for src, dst in (("csv/metrics.csv", "metrics"), ("config.yaml", "config")):
        if (run / src).exists():
            suffix = Path(src).suffix
            (keep / f"{dst}-{name}{suffix}").write_text((run / src).read_text())
    if ev.exists():
        (keep / f"eval-{name}.json").write_text(ev.read_text())
    result[name] = entry
(out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
print(json.dumps(result, indent=1)[:6000])
EOF
tar -czf "$OUT/runs.tar.gz" -C "$K" .
stamp "done"
