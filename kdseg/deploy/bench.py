"""``kdseg-bench``: cost, CPU speed, memory and Dice of models and artefacts, side by side.

For every entry (a checkpoint run with ``torch`` or ``compile``, an ONNX fp32 / int8 file, a
``.pt2`` package; optionally with a preprocessing override such as a smaller in-plane size):

* parameters and multiply-adds per slice (at the size the model actually sees);
* end-to-end CPU time for one full-size volume (read NIfTI, preprocess, predict, write NIfTI):
  median of ``runs`` runs after ``warmup`` runs, with the time inside the model separated, and
  slices per second;
* peak resident memory of the process;
* achieved compute rate ``2 * MACs * slices / model time``, as a fraction of the machine's
  fp32 matrix-multiply peak measured in the same benchmark run;
* organ and tumor Dice with the full-volume protocol on the test split
  (:func:`~kdseg.eval.evaluate.evaluate_cases`).

Every configuration runs in its own subprocess (:mod:`kdseg.deploy.bench_worker`), one at a
time; with ``rounds > 1`` the entries are measured round-robin, so slow phases of the shared
machine hit all of them alike. Results: a Markdown table (also printed), a Dice-versus-time
PNG, and the raw JSON, under ``output_dir``; :func:`~kdseg.deploy.bench_report.check_targets`
(in :mod:`kdseg.deploy.bench_report`, with the report) states which deployment targets
(``targets`` in the config) were met.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kdseg.deploy.bench_report import (
    MARKDOWN_TITLE,
    check_targets,
    markdown_report,
    plot_dice_vs_time,
)
from kdseg.deploy.provenance import source_commit
from kdseg.errors import InputError, atomic_group, progress_steps, removing_new_folders
from kdseg.guards import check_count, check_threads

QUICK = {
    "size": (64, 64),
    "slices": 12,
    "runs": 2,
    "warmup": 1,
    "rounds": 1,
    "max_cases": 1,
    "matmul_size": 512,
}


@dataclass
class BenchEntry:
    """One configuration to measure. ``role``: teacher, student or distilled (for the targets).

    ``weights`` labels the row (``trained``, or e.g. ``random`` for a teacher that is only
    timed: timing does not depend on the weights). ``ckpt`` / ``artifact`` may list two paths,
    stage 1 first: the entry times the organ-to-tumor cascade (both stages, end to end).
    """

    name: str
    ckpt: str | list[str] | None = None
    artifact: str | list[str] | None = None
    backend: str = "torch"
    role: str = "student"
    preprocess: dict[str, Any] | None = None
    dice: bool = True
    weights: str = "trained"

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> BenchEntry:
        unknown = set(cfg) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(
                None, f"bench entry {cfg.get('name')!r}: unknown keys {sorted(unknown)}"
            )
        if not cfg.get("name"):
            raise InputError(None, "every bench entry needs a name")
        for key in ("ckpt", "artifact"):  # a missing file: refused before any measurement
            value = cfg.get(key)
            for path in value if isinstance(value, (list, tuple)) else [value]:
                if path is not None and not Path(path).exists():
                    raise InputError(path, f"bench entry {cfg['name']!r}: {key} not found")
        return cls(**cfg)


@dataclass
class BenchConfig:
    """``conf/bench.yaml`` as a typed object (see that file for the meaning of each key)."""

    entries: list[BenchEntry]
    data: dict[str, Any] | None = None
    split: str = "test"
    max_cases: int | None = None
    volume_dir: str = "data/bench_volume"
    volume_size: tuple[int, int] = (512, 512)
    volume_slices: int = 200
    volume_seed: int = 7
    runs: int = 5
    warmup: int = 1
    rounds: int = 1
    threads: int = 2
    batch_size: int = 1
    matmul_size: int = 2048
    output_dir: str = "runs/bench"
    name: str = "bench"
    quick: bool = False
    fresh_runs: int = 1
    timeout_s: int = 3600
    targets: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> BenchConfig:
        """From the resolved Hydra config; ``quick`` shrinks everything for tests."""
        known = {k: v for k, v in cfg.items() if k in cls.__dataclass_fields__ and k != "entries"}
        if "volume_size" in known:
            known["volume_size"] = tuple(known["volume_size"])
        raw = list(cfg.get("entries") or [])
        if cfg.get("entries_file"):
            raw += _read_entries(Path(cfg["entries_file"]))
        out = cls(entries=[BenchEntry.from_dict(dict(e)) for e in raw], **known)
        if not out.entries:
            raise InputError(
                None, "no bench entries: give entries=[{name: ..., ckpt: ..., backend: ...}]"
            )
        if "/" in out.name or os.sep in out.name or out.name in ("", ".", ".."):
            raise InputError(  # its files go in output_dir, which is checked; a path would not
                None, f"name={out.name!r}: a file name, not a path (the folder is output_dir=)"
            )
        names = [e.name for e in out.entries]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:  # rows are keyed by name: two entries would pool under one label
            raise InputError(None, f"two bench entries are named {repeated[0]!r}: name each once")
        for key, least in (("runs", 1), ("warmup", 0), ("rounds", 1), ("threads", 1),
                           ("batch_size", 1), ("fresh_runs", 0), ("timeout_s", 1)):  # fmt: skip
            check_count(key, getattr(out, key), least)
        check_threads(out.threads)  # each worker's ONNX Runtime / torch threads
        if out.quick:
            out.volume_size, out.volume_slices = QUICK["size"], QUICK["slices"]
            out.runs, out.warmup, out.rounds = QUICK["runs"], QUICK["warmup"], QUICK["rounds"]
            out.max_cases, out.matmul_size = QUICK["max_cases"], QUICK["matmul_size"]
        return out


def _read_entries(path: Path) -> list[dict[str, Any]]:
    """The list of entries in a YAML file (``entries_file=``)."""
    import yaml

    if not path.is_file():
        raise InputError(path, "entries file not found")
    try:
        entries = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid YAML ({type(exc).__name__})") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InputError(path, "must hold a YAML list of {name, ckpt, artifact, backend} maps")
    return entries


BENCH_SUFFIXES = (".md", ".json", ".png")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def bench_outputs(output_dir: str | os.PathLike, name: str) -> list[Path]:
    """The files one run writes: ``<output_dir>/<name>.md``, ``.json`` and ``.png``."""
    return [Path(output_dir) / f"{name}{suffix}" for suffix in BENCH_SUFFIXES]


def _bench_report(path: Path) -> bool:
    """Whether ``path`` is a ``.md`` or ``.json`` that ``kdseg-bench`` wrote: a Markdown file
    whose first line is the report's title, or a JSON object with the results' keys."""
    try:
        if path.suffix == ".md":
            with path.open(encoding="utf-8") as f:
                return f.readline().rstrip("\n") == MARKDOWN_TITLE
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable, not text, not JSON: not ours
        return False
    return isinstance(data, dict) and {"machine", "peak", "rows"} <= set(data)


def check_bench_replaceable(
    output_dir: str | os.PathLike, name: str, overwrite: bool = False
) -> None:
    """Refuse, before anything is measured, to replace a file that is not ``kdseg-bench``'s
    own output (somebody's notes named ``bench.md``, a figure): ``overwrite=true`` replaces it
    anyway. A rerun into its own earlier output needs no option: the ``.md`` is known by its
    title, the ``.json`` by its keys, and the ``.png`` (a PNG image) by the report beside it
    (a plot's pixels carry no mark; a hand-edited report that keeps the title stays ours).
    Whatever ``overwrite`` says, an output path that is a folder (or anything but a file) is
    refused: no option replaces it, and the run's last rename failed there after measuring."""
    md, js, png = bench_outputs(output_dir, name)
    for path in (md, js, png):
        if os.path.lexists(path) and not os.path.isfile(path):
            raise InputError(path, "exists and is not a file, where a bench output goes")
    if overwrite:
        return
    ours = {path: os.path.lexists(path) and _bench_report(path) for path in (md, js)}
    if os.path.lexists(png):
        try:
            with png.open("rb") as f:
                ours[png] = f.read(8) == _PNG_SIGNATURE and (ours[md] or ours[js])
        except OSError:
            ours[png] = False
    for path in (md, js, png):
        if os.path.lexists(path) and not ours.get(path):
            raise InputError(
                path, "exists and is not a kdseg bench output; overwrite=true replaces it"
            )


def bench_volume(cfg: BenchConfig) -> Path:
    """The full-size phantom volume every entry is timed on (written once, then reused)."""
    from kdseg.data.phantom import PhantomConfig, write_dataset

    size, slices = tuple(cfg.volume_size), int(cfg.volume_slices)
    root = Path(cfg.volume_dir) / f"lits_{size[0]}x{size[1]}x{slices}_seed{cfg.volume_seed}"
    phantom = PhantomConfig(
        dataset="lits",
        size_range=(size[0], size[0]),
        slices_range=(slices, slices),
        nonsquare_prob=0.0,
    )
    return write_dataset(root, phantom, n_cases=1, seed=int(cfg.volume_seed), progress=False)[0]


def dice_cases(cfg: BenchConfig) -> list[dict[str, Any]]:
    """The test-split cases Dice is computed on (JSON-able, for the workers)."""
    if not cfg.data:
        return []
    from kdseg.data.dataset import resolve_data

    setup = resolve_data(cfg.data, read_only=True)
    if cfg.split not in setup.split:
        raise InputError(None, f"unknown split {cfg.split!r}; use train, val or test")
    ids = setup.split[cfg.split][: cfg.max_cases or None]
    check_entries_leak(cfg, ids)
    return [
        {
            "case_id": c,
            "image": str(setup.cases[c].image),
            "label": str(setup.cases[c].label),
            "label_map": setup.cases[c].label_map,  # a layout's own label values, as in eval
        }
        for c in ids
    ]


def check_entries_leak(cfg: BenchConfig, ids: list[str]) -> None:
    """Refuse Dice on cases a scored entry (each stage of a cascade) trained on, before any
    measurement (:func:`kdseg.data.manifest.check_no_leak`). Only checkpoints record their
    split: an artefact's metadata does not carry it."""
    from kdseg.eval.checkpoint import check_model_no_leak, read_checkpoint

    name, root = str((cfg.data or {}).get("name")), (cfg.data or {}).get("root")
    for entry in cfg.entries:
        if not entry.dice or entry.weights != "trained":
            continue
        ckpts = entry.ckpt if isinstance(entry.ckpt, (list, tuple)) else [entry.ckpt]
        for path in [p for p in ckpts if p]:
            try:
                data = read_checkpoint(path)["hyper_parameters"]["data"]
            except InputError:  # an unreadable file: its row reports it
                continue
            check_model_no_leak(data, name, cfg.split, ids, path, root)


def _worker_env(threads: int) -> dict[str, str]:
    """Environment of a worker: thread pools sized before any library starts them."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("WANDB_MODE", "disabled")
    return env


def matmul_peak(size: int, threads: int, repeats: int = 10) -> dict[str, Any]:
    """fp32 ``size x size`` matrix-multiply GFLOP/s of torch on ``threads`` threads (best run).

    Measured in this (parent) process, which runs no model, before and after the workers.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(max(repeats, 1)):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return {"gflops": 2 * size**3 / best / 1e9, "size": size, "threads": threads, "seconds": best}


def run_worker(spec: dict[str, Any], threads: int, timeout_s: int) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return its JSON result."""
    with tempfile.TemporaryDirectory(prefix="kdseg-bench-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec))
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "kdseg.deploy.bench_worker", str(spec_path), str(out_path)],
                capture_output=True,
                text=True,
                env=_worker_env(threads),
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            return {
                "name": spec.get("name"),
                "ok": False,
                "error": f"timed out after {timeout_s} s",
            }
        if not out_path.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return {
                "name": spec.get("name"),
                "ok": False,
                "error": f"worker exited {proc.returncode}: {tail[0]}",
            }
        return json.loads(out_path.read_text())


def _merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One result per entry: timings pooled over rounds, Dice from the round that scored it."""
    ok = [r for r in rounds if r.get("ok")]
    if not ok:
        return rounds[0]
    merged = dict(ok[0])
    for key in ("e2e_s", "model_s", "io_s"):
        merged[key] = [t for r in ok for t in r[key]]
    merged["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
    return merged


def summarize_entry(result: dict[str, Any], peak_gflops: float) -> dict[str, Any]:
    """Derived numbers of one result: medians, slices/s, achieved GFLOP/s and share of peak."""
    if not result.get("ok"):
        return result
    out = dict(result)
    out["e2e_median_s"] = statistics.median(result["e2e_s"])
    out["model_median_s"] = statistics.median(result["model_s"])
    out["io_median_s"] = statistics.median(result["io_s"])
    out["slices_per_s"] = result["slices"] / out["e2e_median_s"] if out["e2e_median_s"] else None
    macs = result.get("mult_adds")
    if macs and out["model_median_s"]:
        out["achieved_gflops"] = 2 * macs * result["slices"] / out["model_median_s"] / 1e9
        out["peak_fraction"] = out["achieved_gflops"] / peak_gflops if peak_gflops else None
    return out


def run_bench(cfg: BenchConfig, progress: bool = True) -> dict[str, Any]:
    """Measure every entry (and the matmul peak); write table, PNG and JSON; return the results."""
    commit = source_commit()  # before anything is written: output inside the tree dirties it
    volume = bench_volume(cfg)
    cases = dice_cases(cfg)
    load_before = os.getloadavg()
    base = {
        "threads": cfg.threads,
        "batch_size": cfg.batch_size,
        "volume": str(volume),
        "runs": cfg.runs,
        "warmup": cfg.warmup,
    }
    per_entry: dict[str, list[dict[str, Any]]] = {e.name: [] for e in cfg.entries}
    total = 1 + cfg.rounds * len(cfg.entries)
    with progress_steps("benchmark", total, enabled=progress, transient=True) as bar:
        bar.describe("matmul peak")
        peak = matmul_peak(cfg.matmul_size, cfg.threads)
        bar.advance()
        for round_index in range(cfg.rounds):
            for entry in cfg.entries:
                bar.describe(f"{entry.name} (round {round_index + 1}/{cfg.rounds})")
                spec = {
                    **base,
                    **asdict(entry),
                    "dice_cases": cases if (entry.dice and round_index == 0) else [],
                }
                per_entry[entry.name].append(run_worker(spec, cfg.threads, cfg.timeout_s))
                bar.advance()
        if cfg.fresh_runs > 0:  # the CLI from a new process, start-up included
            from kdseg.deploy.fresh import fresh_cli_seconds

            for entry in cfg.entries:
                bar.describe(f"{entry.name}: fresh kdseg-predict")
                fresh = fresh_cli_seconds(
                    asdict(entry),
                    volume,
                    cfg.threads,
                    cfg.fresh_runs,
                    _worker_env(cfg.threads),
                    batch_size=cfg.batch_size,
                    timeout_s=cfg.timeout_s,
                )
                for result in per_entry[entry.name]:
                    result.update(fresh)
    # measured again at the end: the higher of the two is the closer to the idle machine's peak
    peak = max(peak, matmul_peak(cfg.matmul_size, cfg.threads), key=lambda p: p["gflops"])
    peak_gflops = float(peak["gflops"])
    roles = {e.name: e for e in cfg.entries}
    rows = []
    for name, rounds in per_entry.items():
        row = summarize_entry(_merge_rounds(rounds), peak_gflops)
        row.update(role=roles[name].role, weights=roles[name].weights)
        rows.append(row)
    results = {
        "machine": machine_info(),
        "commit": commit,
        "load_average": [load_before[0], os.getloadavg()[0]],
        "peak": peak,
        "volume": str(volume),
        "volume_shape": [*cfg.volume_size, cfg.volume_slices],
        "threads": cfg.threads,
        "runs": cfg.runs,
        "warmup": cfg.warmup,
        "rounds": cfg.rounds,
        "dice_split": cfg.split,
        "dice_cases": len(cases),
        "rows": rows,
    }
    results["targets"] = check_targets(rows, cfg.targets)
    results["markdown"] = markdown_report(results)
    write_bench_outputs(results, cfg.output_dir, cfg.name)
    return results


def write_bench_outputs(
    results: dict[str, Any], output_dir: str | os.PathLike, name: str
) -> list[Path]:
    """``<name>.png``, ``.json`` and ``.md`` (``results["markdown"]``) in ``output_dir``, as
    one group (:func:`~kdseg.errors.atomic_group`, the report last): a failure while writing
    any of them (the plot included) leaves none of the new files, an earlier run's three as
    they were and no folder this call created, never a new report beside an older run's plot."""
    md, js, png = bench_outputs(output_dir, name)
    data = {k: v for k, v in results.items() if k != "markdown"}
    text = json.dumps(data, indent=1, default=float) + "\n"
    with (
        removing_new_folders([Path(output_dir)]),
        atomic_group([png, js, md], suffixes=[".png", None, None]) as temps,
    ):
        plot_dice_vs_time(results["rows"], temps[0])
        temps[1].write_text(text)
        temps[2].write_text(results["markdown"])
    return [md, js, png]


def machine_info() -> dict[str, Any]:
    """CPU model, core count and library versions, for the report header."""
    import onnxruntime
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }
