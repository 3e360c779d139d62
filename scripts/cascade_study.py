"""Single stage versus organ-to-tumor cascade on phantoms, in one resumable command.

Protocol (fixed before any result was seen; issue 15):

* data: ``N_CASES`` LiTS-like phantoms with the generator's DEFAULT settings (192-256 pixel
  matrices at 1.25-2.2 mm, tumors 3-40 mm, contrast 1), split 70/10/20 by the manifest rule.
* single stage (also stage 1 of every cascade): ENet, multi-class, body crop resized to
  96 x 96 (today's demo protocol, 3.3-4.4 mm per pixel). Its organ prediction gives the box.
* stage 2: multi-class (organ and tumor) inside the organ ROI (``preprocess.roi=organ``, 10 mm
  margin, 5 mm training jitter) resampled to 1.5 mm per pixel and padded / cropped to 128 x 128
  (192 mm); models RA-UNet (width 0.25) and ENet (width 0.25 unless ``--width``).
* training: ``experiment=phantom_study`` (Adam lr 1e-2 cosine, batch 16, tumor-slice
  oversampling 0.7) for ``--steps`` optimizer steps; one thread per run, one run at a time.
* evaluation: ``kdseg-eval`` (full protocol: every slice, argmax, per-case 3D Dice) on the test
  split: the single stage alone, each cascade (``ckpt=[single, stage2]``), and each stage 2
  alone in the reference organ box (an oracle stage 1: the stage-2 model on its own merit).
* real scan: organ Dice of single stage and cascades on ``tests/data/real_ct/ct.nii.gz``
  against ``liver_reference.nii.gz`` (a TotalSegmentator prediction; one scan, never tuned on).
* time: ``kdseg-bench`` on one 512 x 512 x 200 phantom volume, 2 threads, end to end.

Seen in the pilot (1 seed): 128 x 128 at 1.5 mm (192 mm) is smaller than the organ box plus
margins of some default phantoms (up to 235 mm left-right on the test split), so stage 2 never
sees part of those livers (``kdseg-predict`` now says so in the report); ``--size 160`` (240 mm)
covers them at inference (the training jitter can add 10 mm). Changing it is a protocol change
made after the pilot: state it with the results.

``--stage2-from STUDY_DIR`` takes the stage-2 models from the phantom study v3 instead of
training them (``scripts/phantom_study.py``: RA-UNet width 0.5 teachers and ENet width 0.25
students, organ ROI at 1.5 mm, 144 x 144, 1,024 steps, the same 40 default phantoms, seeds
1-5): only the single-stage ENets are trained here. Added 2026-12-01, before any cascade
result of those models was seen.

Every step is skipped when its output exists (a training run resumes from its ``last.ckpt``),
so rerunning the command continues where it stopped. Results: ``<dir>/results.json`` and the
Markdown table ``<dir>/cascade_study.md``, also written to the committed
``docs/cascade_study.md`` with ``--publish`` only (a pilot no longer replaces the recorded
table); ``--stages table`` rebuilds the table from what exists (both copies with
``--publish``).

    python scripts/cascade_study.py                                   # 3 seeds, everything
    python scripts/cascade_study.py --seeds 1 --stage2 raunet --steps 512 \\
        --stages data,train,eval,real,table                              # the pilot
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from study_protocols import phantoms_drawn  # noqa: E402

from kdseg.errors import write_text_atomic  # noqa: E402

BIN = Path(sys.executable).parent
REAL_CT = ROOT / "tests" / "data" / "real_ct"
N_CASES = 40
SINGLE = ("data.preprocess={body_crop: true, in_plane_size: [96, 96]}",)
STAGE2 = (
    "data.preprocess={body_crop: false, roi: organ, roi_margin_mm: 10, roi_jitter_mm: 5, "
    "spacing_mm: [1.5, 1.5], in_plane_size: [SIZE, SIZE]}"
)
STAGES = ("data", "train", "eval", "real", "bench", "table")
#: ``--stage2-from``: the phantom study v3's stage-2 runs,
#: ``<study>/runs/<group>/<model>-w<width>-s<seed>``
V3_STAGE2 = {"raunet": ("teachers", 0.5), "enet": ("students", 0.25)}


class Study:
    """Folder layout and commands of one study (``--dir``)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.dir = Path(args.dir).resolve()
        self.data = self.dir / "data"
        self.seeds = args.seeds
        self.stage2 = args.stage2
        self.steps, self.width, self.size = args.steps, args.width, args.size
        self.stage2_from = Path(args.stage2_from).resolve() if args.stage2_from else None
        self.publish: bool = bool(getattr(args, "publish", False))
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
        self.env["KDSEG_CACHE_DIR"] = str(self.dir / "cache")  # caches in the study folder

    def kdseg(self, command: str, *args: str) -> None:
        print(f"\n$ kdseg-{command} {' '.join(args)}", flush=True)
        subprocess.run([str(BIN / f"kdseg-{command}"), *args], check=True, cwd=ROOT, env=self.env)

    def run_dir(self, kind: str, model: str, seed: int) -> Path:
        if kind == "stage2" and self.stage2_from is not None:  # the phantom study v3's runs
            group, width = V3_STAGE2[model]
            return self.stage2_from / "runs" / group / f"{model}-w{width}-s{seed}"
        return self.dir / "runs" / f"{kind}-{model}-w{self.width}-s{seed}"

    def ckpt(self, kind: str, model: str, seed: int) -> Path:
        return self.run_dir(kind, model, seed) / "checkpoints" / "best.ckpt"

    def out_dir(self, kind: str, model: str, seed: int, name: str) -> Path:
        """Where an evaluation of run ``(kind, model, seed)`` goes: beside the run, except for
        the phantom study's runs, which are never written into (``<dir>/v3/<run>/<name>``)."""
        run = self.run_dir(kind, model, seed)
        if kind == "stage2" and self.stage2_from is not None:
            return self.dir / "v3" / run.name / name
        return run / name

    # -- stages -----------------------------------------------------------------------------
    def stage_data(self) -> None:
        if phantoms_drawn(self.data, N_CASES):  # (a killed call: it draws the rest)
            return
        self.kdseg("phantom", "dataset=lits", f"root={self.data}", f"n_cases={N_CASES}", "seed=0")

    def train(self, kind: str, model: str, seed: int) -> None:
        run = self.run_dir(kind, model, seed)
        if (run / "summary.json").exists():
            return
        epochs = -(-self.steps // 16)  # 16 steps an epoch (phantom_study: 256 samples, batch 16)
        self.kdseg(
            "train",
            "experiment=phantom_study",
            f"data.root={self.data}",
            f"model={model}",
            f"model.width={self.width}",
            f"seed={seed}",
            f"trainer.max_epochs={epochs}",
            f"trainer.max_steps={self.steps}",
            "logger=csv",
            *(SINGLE if kind == "single" else (STAGE2.replace("SIZE", str(self.size)),)),
            f"hydra.run.dir={run}",
        )

    def stage_train(self) -> None:
        for seed in self.seeds:
            self.train("single", "enet", seed)
            for model in self.stage2:
                if self.stage2_from is None:
                    self.train("stage2", model, seed)
                elif not (self.run_dir("stage2", model, seed) / "summary.json").exists():
                    raise SystemExit(f"{self.run_dir('stage2', model, seed)}: not trained yet")

    def evaluate(self, ckpts: list[Path], out: Path) -> None:
        if (out / "summary.json").exists():
            return
        ckpt = str(ckpts[0]) if len(ckpts) == 1 else f"[{','.join(map(str, ckpts))}]"
        self.kdseg(
            "eval",
            "experiment=phantom_study",
            f"data.root={self.data}",
            f"ckpt={ckpt}",
            "threads=1",
            f"output_dir={out}",
        )

    def stage_eval(self) -> None:
        for seed in self.seeds:
            single = self.ckpt("single", "enet", seed)
            self.evaluate([single], self.run_dir("single", "enet", seed) / "eval-test-full")
            for model in self.stage2:
                stage2 = self.ckpt("stage2", model, seed)
                self.evaluate([single, stage2], self.out_dir("stage2", model, seed, "eval-cascade"))
                self.evaluate([stage2], self.out_dir("stage2", model, seed, "eval-oracle"))

    def stage_real(self) -> None:
        import nibabel as nib

        ref = np.asanyarray(nib.load(str(REAL_CT / "liver_reference.nii.gz")).dataobj) > 0
        for seed in self.seeds:
            single = self.ckpt("single", "enet", seed)
            jobs = [("single", [single], self.run_dir("single", "enet", seed))]
            for model in self.stage2:
                run = self.out_dir("stage2", model, seed, "")
                jobs.append(("cascade", [single, self.ckpt("stage2", model, seed)], run))
            for kind, ckpts, run in jobs:
                out = run / f"real_ct-{kind}.json"
                if out.exists():
                    continue
                run.mkdir(parents=True, exist_ok=True)
                label = run / f"real_ct-{kind}.nii.gz"
                arg = str(ckpts[0]) if len(ckpts) == 1 else f"[{','.join(map(str, ckpts))}]"
                self.kdseg(
                    "predict", f"ckpt={arg}", f"input={REAL_CT / 'ct.nii.gz'}", f"output={label}"
                )
                pred = np.asanyarray(nib.load(str(label)).dataobj) > 0
                dice = 2 * (pred & ref).sum() / max(pred.sum() + ref.sum(), 1)
                write_text_atomic(
                    out, json.dumps({"organ_dice_vs_liver_reference": float(dice)}) + "\n"
                )

    def stage_bench(self) -> None:
        out = self.dir / "bench"
        if (out / "cascade_bench.json").exists():
            return
        seed = self.seeds[0]
        single = str(self.ckpt("single", "enet", seed))
        entries = [{"name": "single-enet", "ckpt": single, "dice": False}]
        for model in self.stage2:
            entries.append(
                {
                    "name": f"cascade-enet-{model}",
                    "ckpt": [single, str(self.ckpt("stage2", model, seed))],
                    "dice": False,
                }
            )
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "entries.json", json.dumps(entries))  # JSON is YAML
        self.kdseg(
            "bench",
            f"entries_file={out / 'entries.json'}",
            "dice=false",
            "threads=2",
            "runs=3",
            f"volume_dir={self.dir / 'bench_volume'}",
            f"output_dir={out}",
            "name=cascade_bench",
        )

    # -- table ------------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        """One row per configuration: per-seed numbers where they exist."""
        bench = {}
        bench_file = self.dir / "bench" / "cascade_bench.json"
        if bench_file.exists():
            bench = {r["name"]: r for r in json.loads(bench_file.read_text())["rows"]}
        configs = [("single stage: ENet 96x96", "single", "enet", "eval-test-full", "single")]
        size = 144 if self.stage2_from else self.size
        configs += [
            (
                f"cascade: ENet -> {m} (ROI, 1.5 mm, {size}x{size})",
                "stage2",
                m,
                "eval-cascade",
                "cascade",
            )
            for m in self.stage2
        ]
        configs += [
            (f"stage 2 alone in the reference box: {m}", "stage2", m, "eval-oracle", None)
            for m in self.stage2
        ]
        rows = []
        for title, kind, model, eval_dir, real_kind in configs:
            per_seed = []
            for seed in self.seeds:
                run = self.run_dir(kind, model, seed)
                summary = self.out_dir(kind, model, seed, eval_dir) / "summary.json"
                if not summary.exists():
                    continue
                s = json.loads(summary.read_text())["summary"]
                where = self.out_dir(kind, model, seed, "")
                real = where / f"real_ct-{real_kind}.json" if real_kind else where / "none"
                train = json.loads((run / "summary.json").read_text())
                per_seed.append(
                    {
                        "seed": seed,
                        "organ": s["organ"]["dice_mean"],
                        "tumor": s["tumor"]["dice_mean"],
                        "real_ct_organ": json.loads(real.read_text())[
                            "organ_dice_vs_liver_reference"
                        ]
                        if real.exists()
                        else None,
                        "steps": train["global_step"],
                    }
                )
            name = {"single": "single-enet", "cascade": f"cascade-enet-{model}"}.get(real_kind)
            b = bench.get(name, {})
            rows.append(
                {
                    "config": title,
                    "seeds": per_seed,
                    "volume_s": statistics.median(b["e2e_s"]) if b.get("ok") else None,
                }
            )
        return rows

    def stage_table(self) -> None:
        rows = self.rows()
        write_text_atomic(self.dir / "results.json", json.dumps(rows, indent=1) + "\n")

        def cell(values: list) -> str:
            values = [v for v in values if v is not None]
            if not values:
                return "-"
            if len(values) == 1:
                return f"{values[0]:.3f}"
            return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"

        lines = [
            "# Single stage vs organ-to-tumor cascade (phantoms)",
            "",
            f"Made by `python scripts/cascade_study.py --dir {self._shown_dir()} "
            f"--seeds {','.join(map(str, self.seeds))} --stage2 {','.join(self.stage2)} "
            f"--steps {self.steps} --width {self.width}"
            + (f" --stage2-from {self.stage2_from}" if self.stage2_from else f" --size {self.size}")
            + (" --publish" if self.publish else "")
            + "` (protocol: the "
            "script's docstring). "
            f"Test split of {N_CASES} default phantoms, full-volume protocol, mean ± sd over "
            "seeds; real CT: organ Dice against the liver reference of tests/data/real_ct; "
            "volume time: kdseg-bench, one 512x512x200 volume end to end, 2 threads, median "
            "of 3 runs (first seed's models).",
            "",
            "| configuration | seeds | steps | organ Dice | tumor Dice | real CT organ Dice "
            "| volume time (s) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            s = r["seeds"]
            seconds = "-" if r["volume_s"] is None else f"{r['volume_s']:.2f}"
            lines.append(
                f"| {r['config']} | {','.join(str(x['seed']) for x in s) or '-'} "
                f"| {','.join(sorted({str(x['steps']) for x in s})) or '-'} "
                f"| {cell([x['organ'] for x in s])} | {cell([x['tumor'] for x in s])} "
                f"| {cell([x['real_ct_organ'] for x in s])} "
                f"| {seconds} |"
            )
        text = "\n".join(lines) + "\n"
        write_text_atomic(self.dir / "cascade_study.md", text)
        if self.publish:  # the committed table: only when asked for
            write_text_atomic(ROOT / "docs" / "cascade_study.md", text)
        print(text, end="")

    def _shown_dir(self) -> str:
        try:
            return str(self.dir.relative_to(ROOT))
        except ValueError:
            return str(self.dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=str(ROOT / ".study" / "cascade"))
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3])
    parser.add_argument("--stage2", type=lambda s: s.split(","), default=["raunet", "enet"])
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--size", type=int, default=128, help="stage 2's model grid (pixels)")
    parser.add_argument("--stages", type=lambda s: s.split(","), default=list(STAGES))
    parser.add_argument(
        "--stage2-from", default=None, help="phantom study v3 folder: its stage-2 models"
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also write the table to the committed docs/cascade_study.md",
    )
    args = parser.parse_args(argv)
    unknown = set(args.stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stages {sorted(unknown)}; choose from {', '.join(STAGES)}")
    study = Study(args)
    for stage in STAGES:
        if stage in args.stages:
            start = time.perf_counter()
            getattr(study, f"stage_{stage}")()
            print(f"[cascade study] {stage}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
