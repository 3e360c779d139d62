"""One scan from a fresh process: ``kdseg-predict`` wall time against the nibabel I/O floor.

Prints a markdown table of, each as the median of ``--runs`` fresh processes, with the load
average (``os.getloadavg``, 1 min) at the time of each measurement:

* ``kdseg-predict --help``;
* ``kdseg-predict ckpt=null artifact=A backend=onnx input=I output=O`` (start-up included);
* the nibabel floor: a fresh Python that imports nibabel, reads ``I`` and writes a uint8 label
  NIfTI of its shape (what any tool that reads and writes these files pays);
* each step of one prediction (import, model load, read, preprocess, network, restore, write,
  report), timed in a fresh worker process by calling the library functions the command calls.

``--tree`` runs another checkout of kdseg (for before / after comparisons); the step split of
preprocess / network / restore needs a tree whose ``Predictor`` keeps ``timings``.

    python scripts/bench_fresh.py --artifact student.onnx --input volume-0.nii.gz
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

FLOOR = """
import sys, nibabel as nib, numpy as np
img = nib.load(sys.argv[1]); data = np.asanyarray(img.dataobj)
nib.save(nib.Nifti1Image(np.zeros(data.shape, np.uint8), img.affine), sys.argv[2])
"""

STEPS = """
import json, sys, time
t = {}
clock = time.perf_counter()
import kdseg.cli.predict
from kdseg.data.io import load_volume, save_label
from kdseg.deploy.artifact import resolve_bundle
from kdseg.eval.inference import Predictor
t["import"] = time.perf_counter() - clock
clock = time.perf_counter()
bundle, backend, artifact = resolve_bundle(None, sys.argv[1], "onnx")
predictor = Predictor.from_bundle(bundle, backend=backend, artifact=artifact, batch_size=16)
t["load model"] = time.perf_counter() - clock
clock = time.perf_counter()
image = load_volume(sys.argv[2])
t["read"] = time.perf_counter() - clock
clock = time.perf_counter()
label = predictor.predict(image)
total = time.perf_counter() - clock
timings = getattr(predictor, "timings", None)
if timings:
    t.update(timings)
else:
    t["predict"] = total
clock = time.perf_counter()
save_label(label, image, sys.argv[3])
t["write"] = time.perf_counter() - clock
clock = time.perf_counter()
from kdseg.eval.lesions import lesion_report
lesion_report(label, [float(z) for z in image.header.get_zooms()[:3]])
t["report"] = time.perf_counter() - clock
print(json.dumps(t))
"""


def _env(tree: Path, threads: int | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(tree), WANDB_MODE="disabled")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _wall(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """(seconds, 1-min load average before the run, stdout) of one fresh process."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(argv)}\n{done.stderr[-2000:]}")
    return seconds, load, done.stdout


def _median(argv: list[str], env: dict, cwd: Path, runs: int) -> tuple[float, float, str]:
    results = [_wall(argv, env, cwd) for _ in range(runs)]
    return (
        statistics.median(r[0] for r in results),
        statistics.mean(r[1] for r in results),
        results[-1][2],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", required=True, help="the ONNX artefact (self-describing)")
    parser.add_argument("--input", required=True, help="a NIfTI volume, e.g. 512x512x200")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tree", default=str(ROOT), help="kdseg checkout to run (PYTHONPATH)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS")
    args = parser.parse_args()
    tree = Path(args.tree).resolve()
    env = _env(tree, args.threads)
    predict = str(BIN / "kdseg-predict")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seconds, load, _ = _median([predict, "--help"], env, work, args.runs)
        rows.append(("kdseg-predict --help", seconds, load))
        command = [
            predict,
            "ckpt=null",
            f"artifact={Path(args.artifact).resolve()}",
            "backend=onnx",
            f"input={Path(args.input).resolve()}",
            f"output={work / 'labels.nii.gz'}",
        ]
        fresh, load, _ = _median(command, env, work, args.runs)
        rows.append(("kdseg-predict backend=onnx (fresh process)", fresh, load))
        floor_cmd = [sys.executable, "-c", FLOOR, str(Path(args.input).resolve())]
        floor, load, _ = _median([*floor_cmd, str(work / "floor.nii.gz")], env, work, args.runs)
        rows.append(("nibabel read + write floor (fresh process)", floor, load))
        steps_cmd = [sys.executable, "-c", STEPS, str(Path(args.artifact).resolve())]
        steps_cmd += [str(Path(args.input).resolve()), str(work / "steps.nii.gz")]
        runs = [json.loads(_wall(steps_cmd, env, work)[2]) for _ in range(args.runs)]
        step_load = os.getloadavg()[0]
    print(f"\n## fresh-process prediction ({tree}, median of {args.runs})\n")
    print(f"input {args.input}, artefact {args.artifact}\n")
    print("| measurement | wall s | load avg (1 min) |")
    print("|---|---|---|")
    for name, seconds, load in rows:
        print(f"| {name} | {seconds:.2f} | {load:.2f} |")
    print(f"| ratio predict / floor | {fresh / floor:.2f}x | |")
    print(f"\n### steps of one prediction (worker process, median; load avg {step_load:.2f})\n")
    print("| step | s |")
    print("|---|---|")
    for name in runs[0]:
        print(f"| {name} | {statistics.median(r[name] for r in runs):.2f} |")
    total = statistics.median(sum(r.values()) for r in runs)
    print(f"| total | {total:.2f} |")


if __name__ == "__main__":
    main()
