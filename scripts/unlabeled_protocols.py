"""The unlabeled study's protocols v2-v8 (each fixed in ``scripts/unlabeled_study.py``'s
docstring before its runs), as subclasses of ``unlabeled_base.Study``."""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from phantom_study import PHANTOM_V4  # the same phantom parameters (scripts/ is on the path)
from study_protocols import copy_run, phantom_args
from unlabeled_base import (
    EVAL_DIR,
    N_UNLABELED,
    ROWS,
    SEEDS,
    STUDENT,
    TEACHER,
    Study,
    _dice,
    _link,
    gap_shares,
    init_hash,
    paired_interval,
    results_table,
)

from kdseg.errors import write_text_atomic


class StudyV2(Study):
    """Protocol v2: a high-resolution cascade teacher, a 96 x 96 single-stage student."""

    STUDENT_ARGS = (
        "experiment=phantom_study",
        "logger=csv",
        "data.preprocess={body_crop: true, in_plane_size: [96, 96]}",
    )
    STAGE2_ARGS = (
        "experiment=phantom_study_v3",
        "logger=csv",
        "data.preprocess.window_level=organ",
        "data.preprocess.window=[-100,100]",
        "optim.lr=1e-3",
    )
    STAGE2 = ("raunet", 0.5)
    STAGE2_EXTRA: tuple[str, ...] = ()
    STEPS = 1024

    @property
    def protocol(self) -> list[str]:
        steps = self.steps or self.STEPS
        return [
            *self.STUDENT_ARGS,
            f"trainer.max_epochs={-(-steps // 16)}",
            f"trainer.max_steps={steps}",
        ]

    def train(
        self, row: str, seed: int, model: tuple[str, float], *extra: str, root: Path | None = None
    ) -> Path:
        if row != "teacher":
            return super().train(row, seed, model, *extra, root=root)
        self.train("alone", seed, STUDENT)  # stage 1
        out = self.runs / "teacher" / f"s{seed}"
        if not (out / "summary.json").exists():
            steps = [] if self.steps is None else [f"trainer.max_steps={self.steps}"]
            self.run(
                "train",
                *self.STAGE2_ARGS,
                *self.STAGE2_EXTRA,
                *steps,
                f"data.root={self.labeled}",
                f"model={self.STAGE2[0]}",
                f"model.width={self.STAGE2[1]}",
                f"seed={seed}",
                f"hydra.run.dir={out}",
            )
        return out

    def teacher_ckpt(self, seed: int) -> str:  # type: ignore[override]
        stage1 = self.runs / "alone" / f"s{seed}" / "checkpoints" / "best.ckpt"
        return f"[{stage1},{super().teacher_ckpt(seed)}]"

    def predictions(self, seed: int) -> Path:
        """The cascade's labels of the 6 training cases and the 48 scans, in one folder."""
        folder = self.dir / "teacher_labels" / f"s{seed}"
        if (folder / "dataset.json").exists():
            return folder
        train_images = self.dir / "data" / "labeled_train_images"
        train_images.mkdir(parents=True, exist_ok=True)
        split = json.loads((self.labeled / "kdseg_split.json").read_text())
        for case in split["train"]:
            _link(self.labeled / f"{case}.nii.gz", train_images / f"{case}.nii.gz")
        on_train = self.dir / "pseudo" / f"train-s{seed}"
        if not (on_train / "dataset.json").exists():
            self.run(
                "pseudolabel",
                f"ckpt={self.teacher_ckpt(seed)}",
                f"input={train_images}",
                f"output={on_train}",
                "threads=1",
                "flip_check=false",
            )
        folder.mkdir(parents=True, exist_ok=True)
        for source in (on_train, self.pseudolabels(seed, False)):
            for label in (source / "labelsTr").iterdir():
                _link(label, folder / label.name)
        write_text_atomic(folder / "dataset.json", (on_train / "dataset.json").read_text())
        return folder

    def soft_teacher(self, seed: int) -> str:
        """Stored labels: the cascade cannot run on the student's grid as a live teacher."""
        return f"teacher.predictions={self.predictions(seed)}"

    def evaluate(self, run: Path) -> dict:
        summary = run / EVAL_DIR / "summary.json"
        if not summary.exists():
            teacher = run.parent.name == "teacher"
            ckpt = (
                self.teacher_ckpt(int(run.name[1:]))
                if teacher
                else run / "checkpoints" / "best.ckpt"
            )
            self.run(
                "eval",
                "experiment=phantom_study",  # each stage runs at its checkpoint's preprocessing
                f"data.root={self.labeled}",
                f"ckpt={ckpt}",
                f"output_dir={run / EVAL_DIR}",
                "threads=1",
            )
        return json.loads(summary.read_text())["summary"]


class StudyV3(StudyV2):
    """Protocol v3: v2 on phantoms whose tumors are 15-50 mm, the stage 2 trained 2,048 steps."""

    PHANTOM_PARAMS = "{tumor_mm_range: [15, 50]}"
    STAGE2_EXTRA = ("trainer.max_epochs=32",)


class StudyV5(Study):
    """Protocol v5: study v4's 42 labeled cases, its teacher and its students, + 48 scans."""

    PHANTOM_PARAMS = PHANTOM_V4["params"]
    WINDOW = ("data.preprocess.window_level=organ", "data.preprocess.window=[-100,100]")
    STAGE2 = ("experiment=phantom_study_v3", *WINDOW)  # + logger=csv on training commands
    TEACHER_ARGS = ("model=raunet", "model.width=0.5", "optim.lr=1e-3", "trainer.max_epochs=128")
    STAGE1_ARGS = (
        "experiment=phantom_study",
        "logger=csv",
        "data.preprocess={body_crop: true, in_plane_size: [96, 96]}",
        "trainer.max_epochs=64",
        "trainer.max_steps=1024",
        "model=enet",
        "model.width=0.25",
        "seed=1",
    )
    TEACHER_SEED = 1  # ONE teacher, shared by every student seed (study v4's design)
    METRIC = "dice_per_case_nonempty"  # study v4's
    N_TEST = 12

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.teacher_from = Path(args.teacher_from).resolve() if args.teacher_from else None
        self.v4_runs = Path(args.v4_runs).resolve() if args.v4_runs else None
        if self.steps is not None:
            raise SystemExit("unlabeled_study: --steps is not offered with --protocol v5")

    @property
    def protocol(self) -> list[str]:
        return [*self.STAGE2, f"data.root={self.labeled}"]

    @property
    def train_args(self) -> list[str]:
        return [*self.STAGE2, "logger=csv"]

    # -- data --------------------------------------------------------------------------------
    def data(self) -> None:
        """Study v4's 60 labeled phantoms (same generator call; kdseg-prepare makes the same
        42 / 6 / 12 split, seed 123) and 48 unlabeled scans (seed 1, same parameters)."""
        if (self.unlabeled / "done").exists():
            return
        labeled = (self.labeled, PHANTOM_V4["n_cases"], PHANTOM_V4["seed"])
        self.phantoms((labeled, (self.hidden, N_UNLABELED, 1)), "workers=1")
        self.run("prepare", *self.protocol, "workers=1")
        split = json.loads((self.labeled / "kdseg_split.json").read_text())
        sizes = tuple(len(split[k]) for k in ("train", "val", "test"))
        if sizes != (42, 6, 12):
            raise SystemExit(f"unlabeled_study: split {sizes}, study v4's is (42, 6, 12)")
        self.unlabeled.mkdir(parents=True, exist_ok=True)
        for i in range(N_UNLABELED):
            _link(self.hidden / f"volume-{i}.nii.gz", self.unlabeled / f"scan-{i:03d}.nii.gz")
        (self.unlabeled / "done").write_text("")

    # -- rows --------------------------------------------------------------------------------
    def train(
        self, row: str, seed: int, model: tuple[str, float], *extra: str, root: Path | None = None
    ) -> Path:
        if row == "teacher":
            return self.teacher()
        return super().train(row, seed, model, *extra, root=root)

    def teacher(self) -> Path:
        """Study v4's teacher: copied in from ``--teacher-from`` after checking its config, or
        trained here with the same command (about 50 min on one core)."""
        out = self.runs / "teacher" / f"s{self.TEACHER_SEED}"
        if (out / "summary.json").exists():
            return out
        args = [*self.STAGE2, "logger=csv", *self.TEACHER_ARGS, f"seed={self.TEACHER_SEED}"]
        if self.teacher_from is None:
            self.run("train", *args, f"data.root={self.labeled}", f"hydra.run.dir={out}")
            return out
        from hydra import compose, initialize_config_dir
        from omegaconf import OmegaConf
        from phantom_study import config_diff

        import kdseg.config  # noqa: F401
        from kdseg.cli import CONFIG_PATH, to_dict

        for name in ("checkpoints/best.ckpt", "config.yaml", "summary.json"):
            if not (self.teacher_from / name).is_file():
                raise SystemExit(
                    f"unlabeled_study: --teacher-from {self.teacher_from}: no {name}; a "
                    "finished run folder is needed"
                )
        with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
            want = to_dict(compose("train", overrides=[*args, f"data.root={self.labeled}"]))
        saved = OmegaConf.to_container(
            OmegaConf.load(self.teacher_from / "config.yaml"), resolve=True
        )
        diff = config_diff(want, saved)
        if diff:
            raise SystemExit(f"unlabeled_study: --teacher-from differs: {'; '.join(diff)}")
        if out.exists():
            raise SystemExit(f"unlabeled_study: {out} holds an unfinished run; remove it")
        copy_run(self.teacher_from, out, self.dir / ".partial" / "teacher" / out.name)
        return out

    def stage1(self) -> Path:
        """ENet w0.25 single stage at 96 x 96 on the 42 labeled cases: it finds the organ box
        of each unlabeled scan in the cascade [stage 1, teacher] that labels them."""
        out = self.runs / "stage1" / "s1"
        if not (out / "summary.json").exists():
            self.run(
                "train", *self.STAGE1_ARGS, f"data.root={self.labeled}", f"hydra.run.dir={out}"
            )
        return out

    def teacher_ckpt(self, seed: int) -> str:  # type: ignore[override]
        """The cascade that labels the unlabeled scans (one teacher for every seed)."""
        stage1 = self.stage1() / "checkpoints" / "best.ckpt"
        teacher = self.teacher() / "checkpoints" / "best.ckpt"
        return f"[{stage1},{teacher}]"

    @property
    def pseudo_seeds(self) -> list[int]:
        return [self.TEACHER_SEED]

    def pseudolabels(self, seed: int, filtered: bool) -> Path:
        return super().pseudolabels(self.TEACHER_SEED, filtered)

    SOFT_METHOD = "emkd_balanced"  # the option study v4 selected on validation

    @property
    def distill_args(self) -> list[str]:
        return [f"{self.STAGE2[0]}_distill", *self.STAGE2[1:], "logger=csv"]

    def soft_teacher(self, seed: int) -> str:
        return f"teacher.ckpt={self.teacher() / 'checkpoints' / 'best.ckpt'}"

    def soft_extra(self, seed: int) -> list[str]:
        """The teacher's name, and the scans' organ masks: the cascade's unfiltered labels."""
        boxes = self.pseudolabels(seed, False)
        return ["teacher.name=raunet", f"data.unlabeled_roi_labels={boxes}"]

    def combined(self, seed: int, filtered: bool) -> Path:
        return super().combined(self.TEACHER_SEED, filtered)

    def soft_and(
        self, other: dict[int, dict], scores: dict[str, dict[int, dict]], name: str
    ) -> tuple[dict[int, float], dict[int, float]]:
        """Per seed, the soft row's Dice of class ``name`` and that of the ``other`` runs'
        evaluation summaries (the pair the extra reports subtract)."""
        soft = {s: _dice(scores["soft"][s], name, self.METRIC) for s in self.seeds}
        return soft, {s: _dice(other[s], name, self.METRIC) for s in self.seeds}

    def extra_report(
        self, scores: dict[str, dict[int, dict]], inits: dict[str, dict[int, str | None]]
    ) -> str:
        """The soft row minus study v4's ``emkd_balanced`` run of the same seed (``--v4-runs``):
        the same method without the unlabeled scans, from the same starting weights."""
        if self.v4_runs is None:
            return ""
        lines = [
            "",
            "soft minus study v4's emkd_balanced (no unlabeled scans), same seed "
            f"({self.v4_runs}/main/raunet-enet-w0.25-emkd_balanced-s<seed>):",
            "",
            "| class | per seed | paired diff [95% t] |",
            "|---|---|---|",
        ]
        v4, same = {}, []
        for seed in self.seeds:
            run = self.v4_runs / "main" / f"raunet-enet-w0.25-emkd_balanced-s{seed}"
            v4[seed] = json.loads((run / EVAL_DIR / "summary.json").read_text())["summary"]
            init = init_hash(run)
            same.append(init == inits["soft"][seed])
        for name in ("organ", "tumor"):
            soft, base = self.soft_and(v4, scores, name)
            cells = ", ".join(f"{soft[s] - base[s]:+.3f}" for s in self.seeds)
            lines.append(f"| {name} | {cells} | {paired_interval(soft, base)} |")
        lines += ["", f"same starting weights as the v4 runs: {all(same)}"]
        return "\n".join(lines) + "\n"

    def hard(self, seed: int, filtered: bool) -> Path:
        row = "filtered" if filtered else "pseudo"
        root = self.combined(seed, filtered)
        return self.train(row, seed, STUDENT, "data=nnunet", root=root)

    def evaluate(self, run: Path) -> dict:
        """Study v4's scoring: the 12 test cases, stage 2 in the reference organ box."""
        summary = run / EVAL_DIR / "summary.json"
        if not summary.exists():
            self.run(
                "eval",
                *self.protocol,
                f"ckpt={run / 'checkpoints' / 'best.ckpt'}",
                "split=test",
                f"output_dir={run / EVAL_DIR}",
                "threads=1",
            )
        return json.loads(summary.read_text())["summary"]


class StudyV6(StudyV5):
    """Protocol v6: v5 with the student's labeled cases cut to 6 of the 42 (the teacher,
    its stage 1 and the pseudo-labels stay v5's)."""

    N_FEW = 6

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.student_root = self.dir / "data" / "few"

    def data(self) -> None:
        """v5's data, and ``data/few``: links to the labeled volumes with a split whose
        training cases are :attr:`N_FEW` of v5's 42 (seeded, fixed in the protocol)."""
        super().data()
        few = self.student_root
        if (few / "done").exists():
            return
        split = json.loads((self.labeled / "kdseg_split.json").read_text())
        chosen = sorted(random.Random(0).sample(sorted(split["train"]), self.N_FEW))
        few.mkdir(parents=True, exist_ok=True)
        for case in [*chosen, *split["val"], *split["test"]]:
            n = case.split("-")[1]
            for name in (f"volume-{n}.nii.gz", f"segmentation-{n}.nii.gz"):
                _link(self.labeled / name, few / name)
        # the split first: kdseg-prepare would otherwise draw its own 70 / 10 / 20 one
        text = json.dumps({**split, "train": chosen}, indent=1) + "\n"
        write_text_atomic(few / "kdseg_split.json", text)
        self.run("prepare", *self.STAGE2, f"data.root={few}", "workers=1")
        (few / "done").write_text("")  # last: it marks the folder done

    def extra_report(
        self, scores: dict[str, dict[int, dict]], inits: dict[str, dict[int, str | None]]
    ) -> str:
        """The control (``emkd_balanced`` on the 6 cases, no scans; same seeds and starting
        weights) and the soft row minus it: what the unlabeled scans add."""
        control = {
            seed: self.evaluate(self.distill_row("control", seed, "teacher.name=raunet"))
            for seed in self.seeds
        }
        lines = [
            "",
            "control: emkd_balanced on the 6 labeled cases without the scans; soft minus it:",
            "",
            "| class | control, per seed | soft minus control, per seed | paired diff [95% t] |",
            "|---|---|---|---|",
        ]
        for name in ("organ", "tumor"):
            soft, base = self.soft_and(control, scores, name)
            cells = ", ".join(f"{base[s]:.3f}" for s in self.seeds)
            diffs = ", ".join(f"{soft[s] - base[s]:+.3f}" for s in self.seeds)
            lines.append(f"| {name} | {cells} | {diffs} | {paired_interval(soft, base)} |")
        return "\n".join(lines) + "\n"


class StudyV7(StudyV6):
    """Protocol v7: v6 (in v6's folder) + two rows with hard pseudo-labels and live soft
    targets together; one row with unlabeled data chosen on validation, scored on 24 fresh
    test phantoms."""

    HARD_SOFT = {"pseudo_kd": "kd", "pseudo_soft": "emkd_balanced_region"}
    ROWS = (*ROWS, *HARD_SOFT)
    CANDIDATES = ("soft", "pseudo", "filtered", *HARD_SOFT)  # the rows with unlabeled data
    FRESH = (84, 108)  # the fresh test cases: volume-84 ... volume-107
    FRESH_CALL = 132  # n_cases of the generator call that draws them (108-131: issue 11's)
    SPLITS = {"val": "eval-val", "fresh": "eval-fresh"}

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.fresh = self.dir / "data" / "fresh"
        self.fresh_split = self.dir / "fresh_split.json"

    def data(self) -> None:
        """v6's data, and the fresh phantoms with a split file whose test part is the 24."""
        super().data()
        if self.fresh_split.exists():
            return
        params = PHANTOM_V4["params"]
        args = phantom_args(self.fresh, self.FRESH_CALL, PHANTOM_V4["seed"], params)
        self.run("phantom", *args, "workers=1")
        truth = json.loads((self.fresh / "phantom_truth.json").read_text())
        mine = json.loads((self.labeled / "phantom_truth.json").read_text())
        # the cases, not the params' fingerprint: folders drawn before 2026-12-08 recorded
        # the params as typed (ints for float fields), the fresh call records them normalised
        if any(
            {**truth[case], "config": 0} != {**entry, "config": 0} for case, entry in mine.items()
        ):
            raise SystemExit("unlabeled_study: the fresh call's first cases differ from v6's")
        split = json.loads((self.labeled / "kdseg_split.json").read_text())
        fresh = [f"volume-{i}" for i in range(*self.FRESH)]
        text = json.dumps({"train": split["train"], "val": split["val"], "test": fresh}, indent=1)
        partial = self.fresh_split.with_suffix(".partial")
        partial.write_text(text + "\n")
        partial.rename(self.fresh_split)  # last: it marks the data done

    def hard_soft(self, row: str, seed: int) -> Path:
        """``kdseg-distill`` on the pseudo row's data (6 cases + 48 pseudo-labelled scans)
        from the live teacher with the row's method: L_seg on the labels, distillation on
        every slice."""
        root = self.combined(seed, False)
        method = self.HARD_SOFT[row]
        return self.distill_row(
            row, seed, "data=nnunet", "teacher.name=raunet", root=root, method=method
        )

    def evaluate_on(self, run: Path, split: str) -> dict:
        """Per-case Dice of ``run`` on v4's validation cases (``val``) or the fresh ones."""
        if split == "val":
            where = [f"data.root={self.labeled}", "split=val"]
        else:
            where = [f"data.root={self.fresh}", f"data.split_file={self.fresh_split}", "split=test"]
        return self.evaluate_into(run, run / self.SPLITS[split], *where)

    def evaluate_into(self, run: Path, out: Path, *where: str) -> dict:
        """kdseg-eval of ``run``'s best checkpoint on the cases ``where`` names, into ``out``
        (skipped when done); its summary."""
        if not (out / "summary.json").exists():
            ckpt = run / "checkpoints" / "best.ckpt"
            self.run("eval", *self.STAGE2, *where, f"ckpt={ckpt}", f"output_dir={out}", "threads=1")
        return json.loads((out / "summary.json").read_text())["summary"]

    def main(self) -> None:
        started = time.perf_counter()
        self.data()
        names = ("test", *self.SPLITS)
        scores: dict[str, dict[str, dict[int, dict]]] = {
            n: {r: {} for r in self.ROWS} for n in names
        }
        inits: dict[str, dict[int, str | None]] = {r: {} for r in self.ROWS}
        for seed in self.seeds:
            runs = {
                "teacher": self.train("teacher", seed, TEACHER),
                "alone": self.train("alone", seed, STUDENT),
                "soft": self.soft(seed),
                "pseudo": self.hard(seed, filtered=False),
                "filtered": self.hard(seed, filtered=True),
                **{row: self.hard_soft(row, seed) for row in self.HARD_SOFT},
            }
            self.distill_row("control", seed, "teacher.name=raunet")  # v6's, for completeness
            for row, run in runs.items():
                scores["test"][row][seed] = self.evaluate(run)
                for name in self.SPLITS:
                    scores[name][row][seed] = self.evaluate_on(run, name)
                inits[row][seed] = init_hash(run)
        if len(self.seeds) < len(SEEDS):
            print(f"unlabeled_study v7: seeds {self.seeds} done; the report needs 1,2,3")
            return
        chosen, shares = self.choose(scores["val"])
        n_val = len(json.loads((self.labeled / "kdseg_split.json").read_text())["val"])
        n_fresh = self.FRESH[1] - self.FRESH[0]
        parts = [
            f"## Choice on validation ({n_val} cases, seeds 1-3): **{chosen}**\n",
            "| row | organ share | tumor share | min |\n|---|---|---|---|\n"
            + "".join(
                f"| {r} | {100 * o:.0f}% | {100 * t:.0f}% | {100 * min(o, t):.0f}% |\n"
                for r, (o, t) in shares.items()
            ),
            f"## Endpoint: fresh test cases (volume-{self.FRESH[0]} to -{self.FRESH[1] - 1})\n",
            self.table(scores["fresh"], inits, n_fresh),
            "## v6's 12 test cases (for continuity)\n",
            self.table(scores["test"], inits, self.N_TEST),
            "## Validation\n",
            self.table(scores["val"], inits, n_val),
        ]
        text = "\n".join(parts)
        text += f"\nwall time of this invocation: {time.perf_counter() - started:.0f} s\n"
        write_text_atomic(self.dir / "results-v7.md", text)
        record = {"chosen": chosen, "val_shares": shares, "scores": scores}
        write_text_atomic(self.dir / "results-v7.json", json.dumps(record, indent=1, default=float))
        print(text)

    def table(self, scores: dict[str, dict[int, dict]], inits: dict, n: int) -> str:
        return results_table(scores, inits, self.seeds, self.METRIC, n, rows=self.ROWS)

    def choose(self, val: dict[str, dict[int, dict]]) -> tuple[str, dict[str, tuple[float, float]]]:
        """The protocol's choice: the row with unlabeled data whose smaller share of the
        alone -> teacher gap (organ, tumor; validation means over the seeds) is largest."""

        shares = {row: gap_shares(val, row, self.seeds, self.METRIC) for row in self.CANDIDATES}
        chosen = max(self.CANDIDATES, key=lambda r: min(shares[r]))  # ties: the earlier row
        return chosen, shares


class StudyV8(StudyV7):
    """Protocol v8: v7's ``pseudo_kd`` row fixed in advance, seeds 1-5, scored on 24 new fresh
    test phantoms (cases 132-155); v7's other rows beside it for information."""

    FRESH = (132, 156)
    FRESH_CALL = 156
    ENDPOINT = "pseudo_kd"
    SEEDS = (1, 2, 3, 4, 5)
    INFO_SEEDS = (1, 2, 3)  # v7's rows that v8 does not train further
    SPLITS = {"fresh": "eval-fresh8"}

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.fresh_split = self.dir / "fresh8_split.json"

    def data(self) -> None:
        """v7's data; the new cases join v7's fresh folder, whose drawn cases must not change."""
        truth = self.fresh / "phantom_truth.json"
        before = json.loads(truth.read_text()) if truth.exists() else {}
        super().data()
        after = json.loads(truth.read_text())
        if any(after.get(case) != entry for case, entry in before.items()):
            raise SystemExit("unlabeled_study: drawing v8's cases changed v7's fresh cases")

    def main(self) -> None:
        started = time.perf_counter()
        self.data()
        rows = ("teacher", "alone", self.ENDPOINT)
        scores: dict[str, dict[int, dict]] = {r: {} for r in StudyV7.ROWS}
        inits: dict[str, dict[int, str | None]] = {r: {} for r in StudyV7.ROWS}
        for seed in self.seeds:
            runs = {
                "teacher": self.train("teacher", seed, TEACHER),
                "alone": self.train("alone", seed, STUDENT),
                self.ENDPOINT: self.hard_soft(self.ENDPOINT, seed),
            }
            for row, run in runs.items():
                scores[row][seed] = self.evaluate_on(run, "fresh")
                inits[row][seed] = init_hash(run)
        if sorted(self.seeds) != list(self.SEEDS):
            print(f"unlabeled_study v8: seeds {self.seeds} done; the report needs 1-5")
            return
        info = {r: dict(scores[r]) for r in StudyV7.ROWS}
        for row in StudyV7.ROWS:
            for seed in self.INFO_SEEDS:
                if seed not in info[row]:
                    run = self.runs / row / f"s{seed}"
                    info[row][seed] = self.evaluate_on(run, "fresh")
                    inits[row][seed] = init_hash(run)
        n = self.FRESH[1] - self.FRESH[0]
        endpoint = results_table(scores, inits, list(self.SEEDS), self.METRIC, n, rows=rows)
        others = results_table(
            info, inits, list(self.INFO_SEEDS), self.METRIC, n, rows=StudyV7.ROWS
        )
        shares = self.shares(scores, list(self.SEEDS))
        met = min(shares) >= 0.5
        text = "\n".join(
            [
                f"## Endpoint: {self.ENDPOINT} on cases volume-{self.FRESH[0]} to "
                f"-{self.FRESH[1] - 1}, seeds 1-5\n",
                endpoint,
                f"target (>= 50% of the gap on organ and on tumor) met: {met} "
                f"(organ {100 * shares[0]:.0f}%, tumor {100 * shares[1]:.0f}%)\n",
                "## v7's rows on the same cases, seeds 1-3 (information only)\n",
                others,
                f"wall time of this invocation: {time.perf_counter() - started:.0f} s",
            ]
        )
        write_text_atomic(self.dir / "results-v8.md", text + "\n")
        record = {"endpoint": self.ENDPOINT, "shares": shares, "met": met, "scores": scores}
        write_text_atomic(self.dir / "results-v8.json", json.dumps(record, indent=1, default=float))
        print(text)

    def shares(self, scores: dict[str, dict[int, dict]], seeds: list[int]) -> tuple[float, float]:
        """The endpoint row's (organ, tumor) shares of the alone -> teacher gap."""
        return gap_shares(scores, self.ENDPOINT, seeds, self.METRIC)
