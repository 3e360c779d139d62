"""What a reused run or data folder must match before a phantom study takes it in.

``phantom_study.Study`` mixes this in: ``run_config`` composes the config a stage would train a
run with, and ``reuse_runs`` (``--runs-from``), ``check_teacher_run`` (``--teacher-from``) and
``check_phantoms`` (``--data-from``) compare what is on disk with it, each refusing with one
line when they differ. No run is retrained to check it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from study_protocols import (
    DISTILL_KEYS,
    REUSABLE,
    RUN_KEYS,
    TEACHER,
    TEACHER_WIDTH,
    config_diff,
    copy_run,
    teacher_seed_override,
)


class ReuseChecks:
    """The checks; the host class (``phantom_study.Study``) provides ``dir``, ``runs``,
    ``protocol``, ``common``, ``hydra_job``, ``teacher_seeds`` and ``layout``."""

    def teacher_config(self, seed: int) -> dict:
        """The resolved config the teachers stage trains the teacher of ``seed`` with."""
        return self.run_config("teachers", f"{TEACHER}-w{TEACHER_WIDTH}-s{seed}")

    def run_config(self, stage: str, name: str) -> dict:
        """The resolved config the run ``runs/<stage>/<name>`` is trained with: the overrides
        :meth:`train_sweep` or :meth:`distill_sweep` give that run."""
        from hydra import compose, initialize_config_dir

        import kdseg.config  # noqa: F401
        from kdseg.cli import CONFIG_PATH, to_dict

        common = [*self.common, *self.protocol.overrides]
        train = re.fullmatch(r"(\w+)-w([\d.]+)-s(\d+)", name)
        distill = re.fullmatch(rf"{TEACHER}-(\w+)-w([\d.]+)-(\w+)-s(\d+)", name)
        if stage in ("teachers", "students") and train:
            model, width, seed = train.groups()
            command, overrides = (
                "train",
                [
                    f"experiment={self.protocol.experiment}",
                    *common,
                    f"model={model}",
                    f"model.width={width}",
                    f"seed={seed}",
                    *(self.protocol.teacher_overrides if stage == "teachers" else ()),
                    *self.layout("model", model),
                ],
            )
        elif stage not in ("teachers", "students") and distill:
            student, width, method, seed = distill.groups()
            command, overrides = (
                "distill",
                [
                    f"experiment={self.protocol.experiment}_distill",
                    *common,
                    f"teacher.name={TEACHER}",
                    f"student={student}",
                    f"student.width={width}",
                    f"distill={method}",
                    f"seed={seed}",
                    f"study.teacher_width={TEACHER_WIDTH}",
                    *teacher_seed_override(self.protocol.teacher_seed),
                    *self.layout("teacher", TEACHER),
                    *self.layout("student", student),
                ],
            )
        else:
            raise SystemExit(f"phantom_study: {stage}/{name} is not a run this study makes")
        with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
            return to_dict(compose(command, overrides=[*overrides, *self.hydra_job]))

    def reuse_runs(self, source: Path) -> None:
        """Copy the finished runs of an earlier study's ``runs/`` (stages :data:`REUSABLE`)
        that this study lacks, each only after checking that its ``config.yaml`` is the one
        this study would train it with (:data:`RUN_KEYS`, :data:`DISTILL_KEYS`; paths aside).
        Their evaluations are left behind: this study scores them on its own splits. A
        distillation run must have learnt from a checkpoint byte-identical to this study's
        teacher (sha256; the teachers are copied first). Each run is copied under a temporary
        name and renamed, so an interrupted copy is never taken for a finished run."""
        import hashlib

        from omegaconf import OmegaConf

        digests: dict[Path, str] = {}

        def digest(path: Path) -> str:
            if path not in digests:
                digests[path] = hashlib.sha256(path.read_bytes()).hexdigest()
            return digests[path]

        copied = 0
        for stage in REUSABLE:
            for run in sorted(p.parent for p in (source / stage).glob("*/summary.json")):
                target = self.runs / stage / run.name
                if (target / "summary.json").exists():
                    continue
                if target.exists():
                    raise SystemExit(f"phantom_study: {target} holds an unfinished run; remove it")
                saved = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"), resolve=True)
                where = f"phantom_study: --runs-from {run}"
                expected = self.run_config(stage, run.name)
                keys = RUN_KEYS if stage in ("teachers", "students") else DISTILL_KEYS
                diff = config_diff(expected, saved, keys)
                if diff:
                    raise SystemExit(
                        f"{where}: its config.yaml differs from the run this study would train: "
                        + "; ".join(diff)
                    )
                if keys is DISTILL_KEYS:
                    theirs, ours = Path(saved["teacher"]["ckpt"]), Path(expected["teacher"]["ckpt"])
                    if not (theirs.is_file() and ours.is_file()):
                        raise SystemExit(
                            f"{where}: cannot compare its teacher {theirs} with {ours}"
                        )
                    if digest(theirs) != digest(ours):
                        raise SystemExit(
                            f"{where}: its teacher {theirs} is not this study's {ours}"
                        )
                copy_run(run, target, self.dir / ".partial" / stage / run.name)
                copied += 1
        print(f"[study] --runs-from {source}: {copied} run(s) copied in", flush=True)

    def check_teacher_run(self, run: Path) -> int:
        """The seed of a finished teacher run folder that trained exactly what the teachers
        stage would train (:data:`RUN_KEYS`); a one-line SystemExit otherwise."""
        from omegaconf import OmegaConf

        where = f"phantom_study: --teacher-from {run}"
        for name in ("checkpoints/best.ckpt", "config.yaml", "summary.json"):
            if not (run / name).is_file():
                raise SystemExit(f"{where}: no {name}; a finished run folder is needed")
        saved = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"), resolve=True)
        seed = saved.get("seed")
        if seed not in self.teacher_seeds:
            raise SystemExit(f"{where}: seed {seed} is not a teacher seed {self.teacher_seeds}")
        diff = config_diff(self.teacher_config(seed), saved)
        if diff:
            raise SystemExit(
                f"{where}: its config.yaml differs from the teacher this study trains: "
                + "; ".join(diff)
            )
        return seed

    def check_phantoms(self, root: Path) -> None:
        """Refuse (one-line SystemExit) a data folder whose phantoms are not the protocol's:
        ``phantom_truth.json`` records each case's seed and config digest (kdseg-phantom)."""
        import yaml

        from kdseg.data.phantom import PhantomConfig, case_files, case_id, case_seed
        from kdseg.data.phantom.config import TRUTH_FILE
        from kdseg.data.phantom.dataset import _config_digest, _config_digests

        where = f"phantom_study: --data-from {root}"
        if not (root / TRUTH_FILE).is_file():
            raise SystemExit(f"{where}: no {TRUTH_FILE}; not a kdseg-phantom folder")
        truth = json.loads((root / TRUTH_FILE).read_text())
        phantom = self.protocol.phantom
        params = yaml.safe_load(phantom["params"]) or {}
        config = PhantomConfig(
            dataset="lits", **{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        )
        digest, n = _config_digest(config), int(phantom["n_cases"])
        digests = _config_digests(config)  # also the one kdseg recorded before normalising
        expected = {case_id("lits", i): case_seed(int(phantom["seed"]), i) for i in range(n)}
        volumes = {p.name for p in root.glob("volume-*.nii.gz")}
        if set(truth) != set(expected) or len(volumes) != n:
            raise SystemExit(f"{where}: {len(truth)} recorded / {len(volumes)} cases, not {n}")
        for i, (key, seed) in enumerate(expected.items()):
            entry = truth[key]
            if entry.get("seed") != seed or entry.get("config") not in digests:
                raise SystemExit(
                    f"{where}: {key} was drawn with seed {entry.get('seed')} and config "
                    f"{entry.get('config')}, not seed {seed} and {digest} (params {params})"
                )
            if not all(p.is_file() for p in case_files(root, "lits", i)):
                raise SystemExit(f"{where}: {key}'s files are missing")
