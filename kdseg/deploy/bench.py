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
PNG, and the raw JSON, under ``output_dir``; :func:`check_targets` states which deployment
targets (``targets`` in the config) were met.
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

from rich.progress import Progress

from kdseg.errors import InputError, atomic_path, write_text_atomic

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
    output_dir: str = "docs"
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
    entries = yaml.safe_load(path.read_text())
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InputError(path, "must hold a YAML list of {name, ckpt, artifact, backend} maps")
    return entries


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


def dice_cases(cfg: BenchConfig) -> list[dict[str, str]]:
    """The test-split cases Dice is computed on (JSON-able, for the workers)."""
    if not cfg.data:
        return []
    from kdseg.data.dataset import resolve_data

    setup = resolve_data(cfg.data)
    if cfg.split not in setup.split:
        raise InputError(None, f"unknown split {cfg.split!r}; use train, val or test")
    ids = setup.split[cfg.split][: cfg.max_cases or None]
    return [
        {"case_id": c, "image": str(setup.cases[c].image), "label": str(setup.cases[c].label)}
        for c in ids
    ]


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
    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task("benchmark", total=1 + cfg.rounds * len(cfg.entries))
        bar.update(job, description="matmul peak")
        peak = matmul_peak(cfg.matmul_size, cfg.threads)
        bar.advance(job)
        for round_index in range(cfg.rounds):
            for entry in cfg.entries:
                bar.update(job, description=f"{entry.name} (round {round_index + 1}/{cfg.rounds})")
                spec = {
                    **base,
                    **asdict(entry),
                    "dice_cases": cases if (entry.dice and round_index == 0) else [],
                }
                per_entry[entry.name].append(run_worker(spec, cfg.threads, cfg.timeout_s))
                bar.advance(job)
        if cfg.fresh_runs > 0:  # the CLI from a new process, start-up included
            from kdseg.deploy.fresh import fresh_cli_seconds

            for entry in cfg.entries:
                bar.update(job, description=f"{entry.name}: fresh kdseg-predict")
                fresh = fresh_cli_seconds(
                    asdict(entry), volume, cfg.threads, cfg.fresh_runs, _worker_env(cfg.threads)
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
        "load_average": [load_before[0], os.getloadavg()[0]],
        "peak": peak,
        "volume": str(volume),
        "volume_shape": [*cfg.volume_size, cfg.volume_slices],
        "runs": cfg.runs,
        "warmup": cfg.warmup,
        "rounds": cfg.rounds,
        "dice_split": cfg.split,
        "dice_cases": len(cases),
        "rows": rows,
    }
    results["targets"] = check_targets(rows, cfg.targets)
    out = Path(cfg.output_dir)
    results["markdown"] = markdown_report(results)
    write_text_atomic(out / f"{cfg.name}.md", results["markdown"])
    write_text_atomic(
        out / f"{cfg.name}.json",
        json.dumps({k: v for k, v in results.items() if k != "markdown"}, indent=1, default=float)
        + "\n",
    )
    plot_dice_vs_time(rows, out / f"{cfg.name}.png")
    return results


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


# ------------------------------------------------------------------------------------------
# targets


def _reference(rows: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | None:
    """The PyTorch fp32 run of the same checkpoint at the same preprocessing, if benchmarked."""
    for other in rows:
        if (
            other.get("ok")
            and other["backend"] == "torch"
            and other.get("source") == row.get("source")
            and other.get("preprocess") == row.get("preprocess")
            and other is not row
        ):
            return other
    return None


def _tumor(row: dict[str, Any]) -> float | None:
    return (row.get("dice") or {}).get("tumor", {}).get("dice_mean")


def check_targets(rows: list[dict[str, Any]], targets: dict[str, Any]) -> list[dict[str, Any]]:
    """Evaluate the deployment targets on the results: one ``{target, value, met, note}`` each.

    * ``max_volume_s`` / ``max_tumor_dice_drop``: the fastest distilled student (by median
      end-to-end time) against the same checkpoint in PyTorch fp32 at the same preprocessing;
    * ``int8_speedup``: best ONNX int8 over ONNX fp32 model time of the same checkpoint;
    * ``vs_teacher``: ``{model name: ratio}``, teacher time over student time: end to end
      (fastest student per volume) and inside the network (fastest student network), against
      that model's fastest row at the paper's width (1.0) when one was benchmarked (a narrower
      demo teacher is not the paper's teacher).
    """
    ok = [r for r in rows if r.get("ok")]
    out: list[dict[str, Any]] = []
    students = [r for r in ok if r["role"] == "distilled"] or [
        r for r in ok if r["role"] == "student"
    ]
    fastest = min(students, key=lambda r: r["e2e_median_s"]) if students else None
    if fastest is not None and "max_volume_s" in targets:
        t = fastest["e2e_median_s"]
        out.append(
            {
                "target": f"fastest distilled student <= {targets['max_volume_s']} s per volume",
                "value": f"{fastest['name']}: {t:.2f} s",
                "met": t <= float(targets["max_volume_s"]),
            }
        )
    if fastest is not None and "max_tumor_dice_drop" in targets:
        ref = _reference(ok, fastest)
        if fastest["backend"] == "torch" and fastest.get("precision") == "fp32":
            ref = fastest
        if ref is None or _tumor(ref) is None or _tumor(fastest) is None:
            out.append(
                {
                    "target": "tumor Dice within the limit of PyTorch fp32",
                    "value": "no reference run",
                    "met": None,
                }
            )
        else:
            drop = _tumor(ref) - _tumor(fastest)
            out.append(
                {
                    "target": f"tumor Dice within {targets['max_tumor_dice_drop']} of PyTorch fp32",
                    "value": f"{_tumor(fastest):.3f} vs {_tumor(ref):.3f} ({ref['name']})",
                    "met": drop <= float(targets["max_tumor_dice_drop"]),
                }
            )
    if "int8_speedup" in targets:
        out.extend(_int8_pairs(ok, float(targets["int8_speedup"])))
    cascades = [r for r in ok if r.get("stages", 1) == 2]
    if cascades and "max_cascade_volume_s" in targets:
        quickest = min(cascades, key=lambda r: r["e2e_median_s"])
        limit = float(targets["max_cascade_volume_s"])
        out.append(
            {
                "target": f"fastest cascade <= {limit:g} s per volume",
                "value": f"{quickest['name']}: {quickest['e2e_median_s']:.2f} s",
                "met": quickest["e2e_median_s"] <= limit,
            }
        )
    for teacher, ratio in (targets.get("vs_teacher") or {}).items():
        runs = [r for r in ok if r["role"] == "teacher" and r.get("model") == teacher]
        runs = [r for r in runs if r.get("width") == 1.0] or runs
        if fastest is None or not runs:
            out.append(
                {
                    "target": f"fastest student >= {ratio}x faster than {teacher}",
                    "value": "not benchmarked",
                    "met": None,
                }
            )
            continue
        best = min(runs, key=lambda r: r["e2e_median_s"])
        e2e = best["e2e_median_s"] / fastest["e2e_median_s"]
        # a student with a zero-cost network would still read, preprocess and write the volume
        rest = fastest["e2e_median_s"] - fastest["model_median_s"]
        bound = best["e2e_median_s"] / rest if rest > 0 else float("inf")
        net = min(students, key=lambda r: r["model_median_s"])
        net_best = min(runs, key=lambda r: r["model_median_s"])
        model = net_best["model_median_s"] / net["model_median_s"]
        out += [
            {
                "target": f"fastest student >= {ratio}x faster than {teacher}, end to end",
                "value": f"{e2e:.1f}x ({best['name']} vs {fastest['name']}); a zero-cost "
                f"network would give at most {bound:.1f}x: {rest:.2f} s of the student's "
                "volume is not the network",
                "met": e2e >= float(ratio),
            },
            {
                "target": f"fastest student network >= {ratio}x faster than {teacher}'s",
                "value": f"{model:.1f}x model time ({net_best['name']} vs {net['name']})",
                "met": model >= float(ratio),
            },
        ]
    return out


def _int8_pairs(rows: list[dict[str, Any]], wanted: float) -> list[dict[str, Any]]:
    """int8 vs fp32 ONNX of the same checkpoint and preprocessing: speedups, slower ones named."""
    out, best = [], None
    for q in (r for r in rows if r["backend"] == "onnx" and r["precision"] == "int8"):
        fp32 = next(
            (
                r
                for r in rows
                if r["backend"] == "onnx"
                and r["precision"] == "fp32"
                and r.get("source") == q.get("source")
                and r.get("preprocess") == q.get("preprocess")
                and r.get("pruned") == q.get("pruned")
            ),
            None,
        )
        if fp32 is None:
            continue
        speedup = fp32["model_median_s"] / q["model_median_s"]
        e2e = fp32["e2e_median_s"] / q["e2e_median_s"]
        note = "" if speedup >= 1.0 else " (int8 is SLOWER than fp32 here)"
        out.append(
            {
                "target": f"int8 vs fp32 ONNX Runtime, {q['model']}",
                "value": f"{speedup:.2f}x model time, {e2e:.2f}x end to end{note}",
                "met": None,
            }
        )
        best = max(best or 0.0, speedup)
    out.append(
        {
            "target": f"int8 >= {wanted}x faster than fp32 for at least one student",
            "value": "no int8/fp32 pair benchmarked" if best is None else f"best {best:.2f}x",
            "met": None if best is None else best >= wanted,
        }
    )
    return out


# ------------------------------------------------------------------------------------------
# report


def _fmt(value: Any, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _preprocess_text(pre: dict[str, Any]) -> str:
    crop = "body crop, " if pre.get("body_crop") else ""
    size = pre.get("crop_size") or pre.get("in_plane_size")
    return f"{crop}{'x'.join(map(str, size)) if size else 'native'}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results table (one row per entry; failed entries show their error)."""
    head = (
        "| entry | role | backend | precision | preprocessing | params (M) | MMACs/slice | input "
        "| volume time (s) | model time (s) | read + write (s) | slices/s | GFLOP/s | % of peak "
        "| peak RSS (MB) | Dice organ | Dice tumor | load + warm-up (s) | fresh process (s) |"
    )
    lines = [head, "|" + "---|" * 19]
    for r in rows:
        if not r.get("ok"):
            lines.append(
                f"| {r.get('name')} | {r.get('role', '')} | failed: {r.get('error')} |" + " |" * 16
            )
            continue
        dice = r.get("dice") or {}
        prec = r["precision"] + (f", pruned {r['pruned']:.0%}" if r.get("pruned") else "")
        weights = "" if r.get("weights", "trained") == "trained" else f" ({r['weights']} weights)"
        shape = r.get("input_shape") or []
        setup = (r.get("load_s") or 0.0) + (r.get("warmup_s") or 0.0)
        cells = [
            r["name"],
            r["role"] + weights,
            r["backend"],
            prec,
            _preprocess_text(r["preprocess"]),
            _fmt(r.get("params") and r["params"] / 1e6, ".3f"),
            _fmt(r.get("mult_adds") and r["mult_adds"] / 1e6, ",.0f"),
            "x".join(map(str, shape[-2:])) or "-",
            f"{r['e2e_median_s']:.2f}",
            f"{r['model_median_s']:.2f}",
            f"{r['io_median_s']:.2f}",
            _fmt(r.get("slices_per_s"), ".1f"),
            _fmt(r.get("achieved_gflops"), ".1f"),
            _fmt(r.get("peak_fraction") and 100 * r["peak_fraction"], ".0f"),
            f"{r['peak_rss_mb']:.0f}",
            _fmt(dice.get("organ", {}).get("dice_mean"), ".3f"),
            _fmt(dice.get("tumor", {}).get("dice_mean"), ".3f"),
            f"{setup:.1f}",
            _fmt(r.get("fresh_median_s"), ".2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(results: dict[str, Any]) -> str:
    """Header (machine, protocol), table and the target checks, as Markdown."""
    m, peak = results["machine"], results["peak"]
    shape = "x".join(map(str, results["volume_shape"]))
    threads = results["rows"][0].get("threads", "-") if results["rows"] else "-"
    load = results["load_average"]
    lines = [
        "# kdseg CPU benchmark",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']}, "
        f"onnxruntime {m['onnxruntime']}, Python {m['python']}. Threads per run: {threads}. "
        f"1-minute load average at start / end: {load[0]:.1f} / {load[1]:.1f} (other jobs on "
        "the cores slow every number down, multi-threaded runs most).",
        f"fp32 matrix-multiply peak (torch, {peak.get('size')}x{peak.get('size')}, "
        f"{peak.get('threads')} threads): {_fmt(peak.get('gflops'), '.1f')} GFLOP/s.",
        "",
        f"Volume time: one {shape} phantom CT volume end to end (read NIfTI, preprocess, predict, "
        f"write NIfTI), median of {results['runs']} runs x {results['rounds']} round(s) after "
        f"{results['warmup']} warm-up run(s), each configuration in its own process. Model time: "
        "time inside the network only. Read + write: reading the input and writing the label "
        "NIfTI (gzip), part of the volume time. GFLOP/s = 2 x MACs x slices / model time; % of "
        "peak against the fp32 matmul peak above (int8 rows can exceed 100%). Peak RSS: the "
        "whole process (Python, libraries, volume, model). Dice: full-volume protocol (every "
        "slice, argmax, per-case 3D Dice, mean) on "
        f"{results['dice_cases']} {results['dice_split']}-split phantom case(s). "
        "Load + warm-up: model load / session creation plus the first (untimed) volume, which "
        "includes compilation for `compile`. Fresh process: wall time of the `kdseg-predict` "
        "command on the volume in a new process (imports, model load, lesion report included), "
        "median of `fresh_runs`.",
        "",
        markdown_table(results["rows"]),
        "",
    ]
    if results.get("targets"):
        lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
        for t in results["targets"]:
            met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
            lines.append(f"| {t['target']} | {t['value']} | {met} |")
        lines.append("")
    return "\n".join(lines)


def plot_dice_vs_time(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Tumor and organ Dice against end-to-end volume time (log scale), one point per entry.

    Points carry their entry's number and a key beside the plots names them: the entries of
    one model sit close together, where name labels would overlap.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in rows if r.get("ok") and r.get("dice")]
    fig, axes = plt.subplots(1, 2, figsize=(16, 5.5), sharex=True)
    markers = {"teacher": "s", "student": "o", "distilled": "*"}
    for ax, cls in zip(axes, ("tumor", "organ"), strict=True):
        for number, r in enumerate(points, start=1):
            value = r["dice"].get(cls, {}).get("dice_mean")
            if value is None:
                continue
            ax.scatter(r["e2e_median_s"], value, marker=markers.get(r["role"], "o"), s=70)
            ax.annotate(
                str(number),
                (r["e2e_median_s"], value),
                fontsize=8,
                xytext=(4, 3),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        ax.set_xlabel("seconds per volume, end to end (log)")
        ax.set_ylabel(f"{cls} Dice (full volume)")
        ax.grid(True, which="both", alpha=0.3)
    key = "\n".join(f"{number:>2}  {r['name']}" for number, r in enumerate(points, start=1))
    fig.text(0.73, 0.5, key, fontsize=8, family="monospace", va="center")
    fig.suptitle(
        "Dice versus CPU time per volume (square: teacher, circle: student, star: distilled)"
    )
    fig.tight_layout(rect=(0, 0, 0.72, 1))
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path
