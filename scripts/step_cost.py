"""The cost of one distillation step against one plain student step, on the same batch.

``phantom_study.py``'s ``step-cost`` stage; separate because it builds the Lightning modules
in-process, which no other stage does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from study_protocols import EXPERIMENT, STUDENT_WIDTH, TEACHER, TEACHER_WIDTH


def step_cost(
    runs: Path,
    student: str,
    method: str = "emkd",
    repeats: int = 8,
    threads: int = 1,
    experiment: str = EXPERIMENT,
    overrides: Sequence[str] = (),
    teacher_seed: int | None = None,
) -> dict[str, float]:
    """Median seconds per training step (forward, loss, backward, Adam) of the same student on
    the same batch: alone (``SegmentationModule``) and distilled with EMKD (``DistillationModule``).

    Uses the engine's own ``training_step`` (logging is a no-op outside a Trainer), the study's
    data and a trained teacher (of ``teacher_seed``; None: the first that exists), so the
    ratio is what a study run pays per step. One thread by default: on shared cores, OpenMP
    threads waiting for each other swamp the arithmetic.
    """
    import warnings
    from statistics import median

    import torch
    from hydra import compose, initialize_config_dir

    import kdseg.config  # noqa: F401
    from kdseg.cli import CONFIG_PATH, to_dict
    from kdseg.data.dataset import resolve_data
    from kdseg.lit.distill import DistillationModule
    from kdseg.lit.segment import SegmentationModule

    warnings.filterwarnings("ignore", message=".*self.log.*")
    torch.set_num_threads(threads)
    seed = "*" if teacher_seed is None else teacher_seed
    ckpts = sorted(runs.glob(f"teachers/{TEACHER}-w{TEACHER_WIDTH}-s{seed}/checkpoints/best.ckpt"))
    if not ckpts:
        raise SystemExit(f"phantom_study: step-cost needs a teacher (s{seed}) in {runs}/teachers")
    ckpt = ckpts[0]
    data_root = runs.parent / "data" / "lits"
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = to_dict(
            compose(
                "distill",
                overrides=[
                    f"experiment={experiment}_distill",
                    f"data.root={data_root}",
                    f"data.cache_root={runs.parent / 'cache'}",  # phantom_study.py's
                    f"teacher.ckpt={ckpt}",
                    f"student={student}",
                    f"student.width={STUDENT_WIDTH}",
                    f"distill={method}",
                    *overrides,
                ],
            )
        )
    setup = resolve_data(cfg["data"])
    datamodule = setup.datamodule(seed=0)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    common = {
        "model": cfg["student"],
        "data": setup.info(),
        "optim": cfg["optim"],
        "loss": cfg["loss"],
    }
    modules = {
        "student": SegmentationModule(**common),
        "distill": DistillationModule(**common, teacher=cfg["teacher"], distill=cfg["distill"]),
    }
    seconds: dict[str, list[float]] = {name: [] for name in modules}
    optimizers = {
        n: torch.optim.Adam([p for p in m.parameters() if p.requires_grad])
        for n, m in modules.items()
    }
    for _ in range(repeats):  # alternate, so load changes on shared cores hit both alike
        for name, module in modules.items():
            module.train()
            start = time.perf_counter()
            loss = module.training_step(batch, 0)
            optimizers[name].zero_grad()
            loss.backward()
            optimizers[name].step()
            seconds[name].append(time.perf_counter() - start)
    plain, distill = (median(seconds[n][2:]) for n in ("student", "distill"))
    return {
        "teacher": TEACHER,
        "student": student,
        "method": method,
        "batch": list(batch["image"].shape),
        "student_step_s": round(plain, 4),
        "distill_step_s": round(distill, 4),
        "ratio": round(distill / plain, 2),
        "threads": torch.get_num_threads(),
    }
