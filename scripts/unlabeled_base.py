"""The unlabeled study's base: its constants, the v1 ``Study`` (paths, command lines, rows)
and the results table. The protocols are in ``scripts/unlabeled_study.py``'s docstring; the
later protocols' classes in ``unlabeled_protocols.py``."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "scripts"))
from phantom_study import PHANTOM  # noqa: E402  (the same phantom parameters)
from study_protocols import phantom_args, phantoms_drawn  # noqa: E402

from kdseg.errors import write_text_atomic  # noqa: E402

N_TRAIN, N_VAL, N_TEST, N_UNLABELED = 6, 4, 8, 48
TEACHER = ("raunet", 0.25)
STUDENT = ("enet", 0.25)
SEEDS = (1, 2, 3)
UNLABELED_FRACTION = 0.5
ROWS = ("teacher", "alone", "soft", "pseudo", "filtered")
EVAL_DIR = "eval-test-full"


class Study:
    """Paths and command lines of one study folder."""

    PHANTOM_PARAMS: str = PHANTOM["params"]  # kdseg-phantom ``params=`` of both datasets
    METRIC = "dice_mean"  # the table's Dice (kdseg-eval's summary key)
    N_TEST = N_TEST

    def __init__(self, args: argparse.Namespace) -> None:
        self.dir = Path(args.dir).resolve()
        self.labeled = self.dir / "data" / "labeled"
        self.unlabeled = self.dir / "data" / "unlabeled"
        self.hidden = self.dir / "data" / "unlabeled_truth"
        #: the labeled cases of the student rows (v6: a few of them; the teacher's otherwise)
        self.student_root = self.labeled
        self.runs = self.dir / "runs"
        self.seeds: list[int] = args.seeds
        self.steps: int | None = args.steps
        self.log = self.dir / "commands.log"
        self.pilot: bool = args.pilot

    def run(self, command: str, *args: str) -> None:
        """Run one kdseg console script, echoed and logged, failing the study if it fails."""
        line = f"kdseg-{command} {' '.join(args)}"
        print(f"\n$ {line}", flush=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as handle:
            handle.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")
        # every command's slice cache and seeded split in the study folder (never in the data
        # folders, nor in the repository, the commands' working directory)
        env = {**os.environ, "KDSEG_CACHE_DIR": str(self.dir / "cache")}
        subprocess.run([str(BIN / f"kdseg-{command}"), *args], check=True, cwd=ROOT, env=env)

    @property
    def protocol(self) -> list[str]:
        extra = [] if self.steps is None else [f"trainer.max_steps={self.steps}"]
        return ["experiment=phantom_study", "logger=csv", *extra]

    @property
    def train_args(self) -> list[str]:
        """kdseg-train's arguments before the row's data root, model and seed."""
        return self.protocol

    # -- data --------------------------------------------------------------------------------
    def phantoms(self, sets: Sequence[tuple[Path, int, int]], *extra: str) -> None:
        """kdseg-phantom for each ``(root, n_cases, seed)`` not drawn yet, at this protocol's
        generator parameters."""
        for root, count, seed in sets:
            if not phantoms_drawn(root, count):  # (a killed call: it draws the rest)
                self.run("phantom", *phantom_args(root, count, seed, self.PHANTOM_PARAMS), *extra)

    def data(self) -> None:
        if (self.unlabeled / "done").exists():
            return
        n = N_TRAIN + N_VAL + N_TEST
        self.phantoms(((self.labeled, n, 0), (self.hidden, N_UNLABELED, 1)))
        ids = [f"volume-{i}" for i in range(n)]
        split = {
            "train": ids[:N_TRAIN],
            "val": ids[N_TRAIN : N_TRAIN + N_VAL],
            "test": ids[N_TRAIN + N_VAL :],
        }
        write_text_atomic(self.labeled / "kdseg_split.json", json.dumps(split, indent=1) + "\n")
        self.unlabeled.mkdir(parents=True, exist_ok=True)
        for i in range(N_UNLABELED):  # the scans alone, under ids that no labeled case has
            link = self.unlabeled / f"scan-{i:03d}.nii.gz"
            if not link.exists():
                os.symlink(self.hidden / f"volume-{i}.nii.gz", link)
        (self.unlabeled / "done").write_text("")

    # -- training rows -----------------------------------------------------------------------
    def train(
        self, row: str, seed: int, model: tuple[str, float], *extra: str, root: Path | None = None
    ) -> Path:
        """``kdseg-train`` of one row and seed on ``root`` (default: the labeled cases)."""
        out = self.runs / row / f"s{seed}"
        if not (out / "summary.json").exists():
            self.run(
                "train",
                *self.train_args,
                f"data.root={root or self.student_root}",
                f"model={model[0]}",
                f"model.width={model[1]}",
                f"seed={seed}",
                f"hydra.run.dir={out}",
                *extra,
            )
        return out

    def teacher_ckpt(self, seed: int) -> Path:
        return self.runs / "teacher" / f"s{seed}" / "checkpoints" / "best.ckpt"

    def soft_teacher(self, seed: int) -> str:
        """The soft row's teacher override: the live teacher checkpoint."""
        return f"teacher.ckpt={self.teacher_ckpt(seed)}"

    SOFT_METHOD = "kd"  # the soft row's distill=

    @property
    def distill_args(self) -> list[str]:
        """kdseg-distill's arguments before the soft row's data, teacher, student and seed."""
        return self.protocol

    def soft_extra(self, seed: int) -> list[str]:
        """Further overrides of the soft row (none in v1-v3)."""
        return []

    def soft(self, seed: int) -> Path:
        return self.distill_row(
            "soft",
            seed,
            f"data.unlabeled_root={self.unlabeled}",
            f"data.unlabeled_fraction={UNLABELED_FRACTION}",
            *self.soft_extra(seed),
        )

    def distill_row(
        self,
        row: str,
        seed: int,
        *extra: str,
        root: Path | None = None,
        method: str | None = None,
    ) -> Path:
        """``kdseg-distill`` of the student from the soft row's teacher, with ``method``
        (default: the soft row's) on ``root`` (default: the student's labeled cases), +
        ``extra``, into ``runs/<row>/s<seed>``."""
        out = self.runs / row / f"s{seed}"
        if not (out / "summary.json").exists():
            self.run(
                "distill",
                *self.distill_args,
                f"data.root={root or self.student_root}",
                self.soft_teacher(seed),
                f"student={STUDENT[0]}",
                f"student.width={STUDENT[1]}",
                f"distill={method or self.SOFT_METHOD}",
                f"seed={seed}",
                *extra,
                f"hydra.run.dir={out}",
            )
        return out

    def pseudolabels(self, seed: int, filtered: bool) -> Path:
        """The teacher's pseudo-labels of the 48 scans (filtered: at or above the median)."""
        name = "filtered" if filtered else "all"
        out = self.dir / "pseudo" / f"{name}-s{seed}"
        if (out / "dataset.json").exists():
            return out
        extra: list[str] = []
        if filtered:
            table = self.pseudolabels(seed, False) / "confidence.csv"
            import csv

            with table.open() as handle:
                confidences = [float(r["mean_max_prob"]) for r in csv.DictReader(handle)]
            extra = [f"min_confidence={statistics.median(confidences)}", "flip_check=false"]
        self.run(
            "pseudolabel",
            f"ckpt={self.teacher_ckpt(seed)}",
            f"input={self.unlabeled}",
            f"output={out}",
            "threads=1",
            *extra,
        )
        return out

    def combined(self, seed: int, filtered: bool) -> Path:
        """An nnU-Net-layout dataset: the labeled phantom (its split) + the pseudo-labeled
        scans (training only)."""
        pseudo = self.pseudolabels(seed, filtered)
        root = self.dir / "combined" / f"{pseudo.name}"
        if (root / "kdseg_split.json").exists():
            return root
        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        (root / "labelsTr").mkdir(exist_ok=True)
        split = json.loads((self.student_root / "kdseg_split.json").read_text())
        for case in [c for part in ("train", "val", "test") for c in split[part]]:
            n = case.split("-")[1]
            _link(self.labeled / f"volume-{n}.nii.gz", root / "imagesTr" / f"{case}_0000.nii.gz")
            _link(self.labeled / f"segmentation-{n}.nii.gz", root / "labelsTr" / f"{case}.nii.gz")
        kept = sorted(p.name[: -len(".nii.gz")] for p in (pseudo / "labelsTr").iterdir())
        for case in kept:
            _link(
                pseudo / "imagesTr" / f"{case}_0000.nii.gz",
                root / "imagesTr" / f"{case}_0000.nii.gz",
            )
            _link(pseudo / "labelsTr" / f"{case}.nii.gz", root / "labelsTr" / f"{case}.nii.gz")
        write_text_atomic(root / "dataset.json", (pseudo / "dataset.json").read_text())
        split["train"] = split["train"] + kept
        write_text_atomic(root / "kdseg_split.json", json.dumps(split, indent=1) + "\n")
        return root

    def hard(self, seed: int, filtered: bool) -> Path:
        row = "filtered" if filtered else "pseudo"
        if (self.runs / row / f"s{seed}" / "summary.json").exists():
            return self.runs / row / f"s{seed}"
        return self.train(row, seed, STUDENT, "data=nnunet", root=self.combined(seed, filtered))

    def evaluate(self, run: Path) -> dict:
        summary = run / EVAL_DIR / "summary.json"
        if not summary.exists():
            self.run(
                "eval",
                "experiment=phantom_study",
                f"data.root={self.labeled}",
                f"ckpt={run / 'checkpoints' / 'best.ckpt'}",
                "threads=1",
            )
        return json.loads(summary.read_text())["summary"]

    # -- everything ------------------------------------------------------------------------
    def main(self) -> None:
        started = time.perf_counter()
        self.data()
        if self.pilot:
            for seed in self.seeds:
                self.report_pilot(seed)
            return
        scores: dict[str, dict[int, dict]] = {r: {} for r in ROWS}
        inits: dict[str, dict[int, str | None]] = {r: {} for r in ROWS}
        for seed in self.seeds:
            runs = {
                "teacher": self.train("teacher", seed, TEACHER),
                "alone": self.train("alone", seed, STUDENT),
            }
            runs["soft"] = self.soft(seed)
            runs["pseudo"] = self.hard(seed, filtered=False)
            runs["filtered"] = self.hard(seed, filtered=True)
            for row, run in runs.items():
                scores[row][seed] = self.evaluate(run)
                inits[row][seed] = init_hash(run)
        table = results_table(scores, inits, self.seeds, self.METRIC, self.N_TEST)
        table += self.pseudo_quality() + self.extra_report(scores, inits)
        table += f"\nwall time of this invocation: {time.perf_counter() - started:.0f} s\n"
        write_text_atomic(self.dir / "results.md", table)
        write_text_atomic(self.dir / "results.json", json.dumps(scores, indent=1, default=float))
        print(table)

    def report_pilot(self, seed: int) -> None:
        """``--pilot``: the teacher and the student alone only (no distillation), test Dice."""
        runs = {
            "teacher": self.train("teacher", seed, TEACHER),
            "alone": self.train("alone", seed, STUDENT),
        }
        lines = [f"pilot, seed {seed}: test Dice over {N_TEST} cases (dice_mean, as the table)"]
        for row, run in runs.items():
            summary = self.evaluate(run)
            lines.append(
                f"  {row}: organ {_dice(summary, 'organ'):.3f}, tumor {_dice(summary, 'tumor'):.3f}"
            )
        text = "\n".join(lines) + "\n"
        write_text_atomic(self.dir / f"pilot-s{seed}.txt", text)
        print(text, flush=True)

    @property
    def pseudo_seeds(self) -> list[int]:
        """The teacher seeds whose pseudo-labels the study made."""
        return self.seeds

    def extra_report(
        self, scores: dict[str, dict[int, dict]], inits: dict[str, dict[int, str | None]]
    ) -> str:
        """Markdown a protocol adds below the table (none in v1-v3)."""
        return ""

    def pseudo_quality(self) -> str:
        """Markdown: Dice of the pseudo-labels against the hidden truth (all vs kept cases)."""
        import nibabel as nib
        import numpy as np

        def dice(a: np.ndarray, b: np.ndarray) -> float:
            total = int(a.sum()) + int(b.sum())
            return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total

        lines = [
            "",
            "| pseudo-labels | cases | organ Dice vs hidden truth | tumor Dice |",
            "|---|---|---|---|",
        ]
        for seed in self.pseudo_seeds:
            for name in ("all", "filtered"):
                folder = self.dir / "pseudo" / f"{name}-s{seed}" / "labelsTr"
                organ, tumor = [], []
                for path in sorted(folder.iterdir()):
                    n = int(path.name.split("-")[1].split(".")[0])
                    pred = np.asarray(nib.load(path).dataobj)
                    truth = np.asarray(nib.load(self.hidden / f"segmentation-{n}.nii.gz").dataobj)
                    organ.append(dice(pred > 0, truth > 0))
                    tumor.append(dice(pred == 2, truth == 2))
                lines.append(
                    f"| {name}, teacher seed {seed} | {len(organ)} | "
                    f"{statistics.mean(organ):.3f} | {statistics.mean(tumor):.3f} |"
                )
        return "\n".join(lines) + "\n"


def _link(source: Path, link: Path) -> None:
    if not link.exists():
        os.symlink(source.resolve(), link)


def _dice(summary: dict, name: str, metric: str = "dice_mean") -> float:
    stats = summary.get(name, {})
    return float(stats.get(metric, stats.get("dice", float("nan"))))


def init_hash(run: Path) -> str | None:
    """The run's ``init_weights_sha256`` (a checksum of its starting weights), from its
    ``summary.json``: equal within a seed for every student row."""
    return json.loads((run / "summary.json").read_text()).get("init_weights_sha256")


def gap_shares(
    scores: dict[str, dict[int, dict]], row: str, seeds: Sequence[int], metric: str
) -> tuple[float, float]:
    """``row``'s (organ, tumor) shares of the alone -> teacher gap, on the means over ``seeds``
    of the evaluation summaries in ``scores`` (0 where the teacher is not better)."""

    def mean(name: str, which: str) -> float:
        return statistics.mean(_dice(scores[which][s], name, metric) for s in seeds)

    shares = []
    for name in ("organ", "tumor"):
        gap = mean(name, "teacher") - mean(name, "alone")
        shares.append((mean(name, row) - mean(name, "alone")) / gap if gap > 0 else 0.0)
    return shares[0], shares[1]


def paired_interval(treated: dict[int, float], control: dict[int, float]) -> str:
    """``+mean [low, high] (n=...)`` of the per-seed differences, Student-t 95% interval
    (:func:`kdseg.eval.paired.paired_difference`, as kdseg-report computes it)."""
    from kdseg.eval.paired import paired_difference

    result = paired_difference(treated, control)
    return "-" if result is None else result.text()


def results_table(
    scores: dict[str, dict[int, dict]],
    inits: dict[str, dict[int, str | None]],
    seeds: list[int],
    metric: str = "dice_mean",
    n_test: int = N_TEST,
    rows: Sequence[str] = ROWS,
) -> str:
    """Markdown: per row, organ and tumor Dice (mean ± std over seeds), the paired difference
    to ``alone`` (mean and Student-t 95% interval over seeds) and the share of the gap closed."""

    def values(row: str, name: str) -> list[float]:
        return [_dice(scores[row][s], name, metric) for s in seeds]

    def spread(xs: list[float]) -> tuple[float, float]:
        return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0

    def paired(row: str, name: str) -> str:
        by_seed = dict(zip(seeds, values(row, name), strict=True))
        return paired_interval(by_seed, dict(zip(seeds, values("alone", name), strict=True)))

    lines = [
        f"seeds {', '.join(map(str, seeds))}; test Dice ({metric}) over {n_test} cases, "
        "mean ± std over seeds; paired difference to alone with a Student-t 95% interval",
        "",
        "| row | organ Dice | tumor Dice | organ: paired diff | tumor: paired diff "
        "| organ gap closed | tumor gap closed |",
        "|---|---|---|---|---|---|---|",
    ]
    classes = ("organ", "tumor")
    ref = {n: (spread(values("alone", n))[0], spread(values("teacher", n))[0]) for n in classes}
    for row in rows:
        cells = [f"{m:.3f} ± {sd:.3f}" for m, sd in (spread(values(row, n)) for n in classes)]
        cells += ["-" if row in ("teacher", "alone") else paired(row, n) for n in classes]
        for name in classes:
            alone, teacher = ref[name]
            gap = teacher - alone
            if row in ("teacher", "alone"):
                cells.append("-")
            elif gap <= 0:  # the teacher is not better: there is no gap to close
                cells.append("no gap")
            else:
                cells.append(f"{100 * (spread(values(row, name))[0] - alone) / gap:.0f}%")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    same = all(len({inits[r][s] for r in rows if r != "teacher"}) == 1 for s in seeds)
    lines.append("")
    lines.append(f"student rows start from identical weights per seed: {same}")
    return "\n".join(lines) + "\n"
