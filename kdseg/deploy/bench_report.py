"""``kdseg-bench``'s reading of its measurements: which deployment targets were met, the
Markdown report and the Dice-versus-time plot.

Split from :mod:`kdseg.deploy.bench`, which measures; this module only reads the rows that
:func:`kdseg.deploy.bench.run_bench` collects (plain dicts), so it needs neither torch nor a
worker process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdseg.deploy.provenance import describe_provenance

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
                "target": (
                    "fastest distilled student"
                    if fastest["role"] == "distilled"
                    else "fastest student (no distilled entry)"
                )
                + f" <= {float(targets['max_volume_s']):g} s per volume",
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
            drop, limit = _tumor(ref) - _tumor(fastest), float(targets["max_tumor_dice_drop"])
            out.append(
                {
                    "target": f"tumor Dice within {limit:g} of PyTorch fp32",
                    "value": f"{_tumor(fastest):.3f} vs {_tumor(ref):.3f} ({ref['name']})",
                    "met": drop <= limit,
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
                    "target": f"fastest student >= {float(ratio):g}x faster than {teacher}",
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
                "target": f"fastest student >= {float(ratio):g}x faster than {teacher}, end to end",
                "value": f"{e2e:.1f}x ({best['name']} vs {fastest['name']}); a zero-cost "
                f"network would give at most {bound:.1f}x: {rest:.2f} s of the student's "
                "volume is not the network",
                "met": e2e >= float(ratio),
            },
            {
                "target": f"fastest student network >= {float(ratio):g}x faster than {teacher}'s",
                "value": f"{model:.1f}x model time ({net_best['name']} vs {net['name']})",
                "met": model >= float(ratio),
            },
        ]
    return out


def _int8_pairs(rows: list[dict[str, Any]], wanted: float) -> list[dict[str, Any]]:
    """int8 vs fp32 ONNX of the same checkpoint and preprocessing: speedups, slower ones named."""
    out, best, labels = [], None, set()
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
        # the model and its input size; the entry's name too where those do not tell pairs apart
        size = "x".join(map(str, (q.get("input_shape") or [])[-2:]))
        label = f"int8 vs fp32 ONNX Runtime, {q.get('model')}, {size or 'native size'}"
        if label in labels:
            label += f" ({q['name']})"
        labels.add(label)
        out.append(
            {
                "target": label,
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


def _skipped(reason: str | None) -> str:
    """A table cell saying why a measurement was skipped ("-" when there is no reason)."""
    if not reason:
        return "-"
    text = " ".join(str(reason).replace("|", "/").split())
    return f"skipped: {text[:117] + '...' if len(text) > 120 else text}"


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
            _fmt(r.get("fresh_median_s"), ".2f", _skipped(r.get("fresh_skipped"))),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: the first line of every ``kdseg-bench`` Markdown report: how a rerun knows its own ``.md``
MARKDOWN_TITLE = "# kdseg CPU benchmark"


def markdown_report(results: dict[str, Any]) -> str:
    """Header (machine, commit, protocol), table and the target checks, as Markdown.

    A results file written before the commit was recorded (or without a CPU model) still
    renders: the header says it was not recorded; a commit of None (kdseg not run from a git
    checkout) is said as such."""
    m, peak = results["machine"], results["peak"]
    shape = "x".join(map(str, results["volume_shape"]))
    load = results["load_average"]
    commit = results.get("commit", "not recorded") or "none (kdseg ran outside a git checkout)"
    cpu = m.get("cpu") or "CPU model not recorded"
    lines = [
        MARKDOWN_TITLE,
        "",
        f"Commit: {commit}. "
        f"Machine: {cpu}, {m['cores']} cores; torch {m['torch']}, "
        f"onnxruntime {m['onnxruntime']}, Python {m['python']}. "
        f"Threads per run: {results['threads']}. "
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
        "at the same threads and batch size, median of `fresh_runs` (a run over `timeout_s` "
        "is skipped).",
        "",
        markdown_table(results["rows"]),
        "",
    ]
    origins = [(r.get("name"), describe_provenance(r)) for r in results["rows"]]
    if any(line for _, line in origins):
        lines += ["Artefacts exported by:", ""]
        lines += [f"- {name}: {line}" for name, line in origins if line]
        lines.append("")
    if results.get("targets"):
        lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
        for t in results["targets"]:
            met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
            lines.append(f"| {t['target']} | {t['value']} | {met} |")
        lines.append("")
    return "\n".join(lines)


def plot_dice_vs_time(rows: list[dict[str, Any]], path: Path) -> Path:
    """Tumor and organ Dice against end-to-end volume time (log scale), one point per entry.

    Points carry their entry's number and a key beside the plots names them: the entries of
    one model sit close together, where name labels would overlap. The PNG is written to
    ``path`` itself: ``kdseg-bench`` passes a temporary of the group it renames with the
    report and the JSON (:func:`kdseg.deploy.bench.write_bench_outputs`).
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
    try:
        fig.savefig(path, dpi=120, format="png")
    finally:
        plt.close(fig)
    return path
