"""One benchmark measurement in its own process: ``python -m kdseg.deploy.bench_worker SPEC OUT``.

Each configuration (model x backend x preprocessing) runs alone in a fresh interpreter, so
PyTorch's and ONNX Runtime's thread pools never share the cores, compiled-code caches do not
leak between configurations, and the process's peak resident set size (``ru_maxrss`` of
``RUSAGE_SELF``: native allocations included, unlike ``tracemalloc``) belongs to that
configuration alone. ``SPEC`` is a JSON file written by :mod:`kdseg.deploy.bench`; the result
is written as JSON to ``OUT``.

Timed end to end, per run: read the NIfTI volume, preprocess, predict every slice, map back to
the input grid and write the label NIfTI, i.e. exactly ``kdseg-predict`` minus start-up. The
backend calls are timed separately (model time), which gives slices per second and the
achieved compute rate, and so are reading and writing the files (the floor no model can lower).
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


class TimedBackend:
    """Wrap a backend: total seconds spent inside it, slices seen and the last input shape."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.reset()

    def reset(self) -> None:
        self.seconds, self.slices, self.shape = 0.0, 0, None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        out = self.backend(x)
        self.seconds += time.perf_counter() - start
        self.slices += len(x)
        self.shape = tuple(x.shape)
        return out


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cost(bundle: Any, info: dict[str, Any], hw: tuple[int, int]) -> dict[str, Any]:
    """Parameters and mult-adds per slice at ``hw``: counted on the network when it is the one
    that runs, else from the artefact's export facts ``info`` (scaled by the pixel count: the
    networks are fully convolutional)."""
    from kdseg.models.cost import model_cost

    in_channels = int(bundle.data.get("in_channels", 1))
    if bundle.model is not None and "pruning" not in info:
        cost = model_cost(bundle.model, hw, in_channels)
        return {
            "params": int(cost["params"]),
            "mult_adds": int(cost["mult_adds"]),
            "macs_source": "counted",
        }
    if "mult_adds" in info:
        ref = info["cost_input_size"]
        scale = (hw[0] * hw[1]) / (ref[0] * ref[1])
        return {
            "params": int(info["params"]),
            "mult_adds": int(info["mult_adds"] * scale),
            "macs_source": "metadata" if scale == 1 else "metadata, scaled",
        }
    return {"params": None, "mult_adds": None, "macs_source": "unknown"}


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Load, warm up, time ``runs`` end-to-end predictions of the volume, then score Dice."""
    import torch

    import kdseg.deploy.backends  # noqa: F401  (registers compile and aoti)
    from kdseg.data.io import load_volume, save_label
    from kdseg.deploy.artifact import inference_preprocess, read_metadata, resolve_bundle
    from kdseg.eval.evaluate import evaluate_cases, summarize_rows
    from kdseg.eval.inference import CascadePredictor, Predictor

    threads = int(spec["threads"])
    torch.set_num_threads(threads)
    start = time.perf_counter()
    ckpts, artifacts = _stage_list(spec.get("ckpt")), _stage_list(spec.get("artifact"))
    stages = []  # (bundle, backend, artifact, predictor, timer) per stage; two: a cascade
    for i in range(max(len(ckpts), len(artifacts), 1)):
        bundle, backend, artifact = resolve_bundle(
            ckpts[i] if ckpts else None,
            artifacts[i] if artifacts else None,
            spec["backend"],
            threads=threads,  # the session it builds is the one the predictor runs (no second)
        )
        if spec.get("preprocess") and i == max(len(ckpts), len(artifacts), 1) - 1:
            bundle.data = {
                **bundle.data,
                "preprocess": {**bundle.data["preprocess"], **spec["preprocess"]},
            }
        stage = Predictor.from_bundle(
            bundle,
            backend=backend,
            artifact=artifact,
            threads=threads,
            batch_size=int(spec["batch_size"]),
        )
        stage.backend = TimedBackend(stage.backend)
        stages.append((bundle, backend, artifact, stage, stage.backend))
    bundle, backend, artifact, predictor, _ = stages[-1]
    if len(stages) == 2:
        predictor = CascadePredictor(stages[0][3], stages[1][3])
    timers = [s[4] for s in stages]
    load_s = time.perf_counter() - start

    volume = spec["volume"]
    with tempfile.TemporaryDirectory(prefix="kdseg-bench-") as tmp:
        target = Path(tmp) / "label.nii.gz"

        def end_to_end() -> tuple[float, float]:
            """Seconds for the whole volume, and for reading + writing the NIfTI files alone."""
            t0 = time.perf_counter()
            image = load_volume(volume)
            t1 = time.perf_counter()
            label = predictor.predict(image)
            t2 = time.perf_counter()
            save_label(label, image, target)
            t3 = time.perf_counter()
            return t3 - t0, (t1 - t0) + (t3 - t2)

        warmup = [end_to_end()[0] for _ in range(int(spec["warmup"]))]
        totals, model, io = [], [], []
        for _ in range(int(spec["runs"])):
            for timer in timers:
                timer.reset()
            total, io_s = end_to_end()
            totals.append(total)
            model.append(sum(t.seconds for t in timers))
            io.append(io_s)
        slices, shape = sum(t.slices for t in timers), timers[-1].shape
    peak = peak_rss_mb()
    meta = (read_metadata(artifact, required=False) or {}) if artifact else {}
    export = meta.get("export", {})
    result: dict[str, Any] = {
        "name": spec["name"],
        "backend": backend,
        "precision": export.get("precision", "fp32"),
        "pruned": (export.get("pruning") or {}).get("ratio"),
        "stages": len(stages),
        "model": "+".join(str(s[0].model_config.get("name")) for s in stages),
        "width": bundle.model_config.get("width"),
        "source": "|".join(str(_resolved(c)) for c in (ckpts or [meta.get("source_checkpoint")])),
        "provenance": meta.get("provenance"),  # who exported the artefact, from which checkpoint
        # as inference reads it (defaults filled in): a schema-2 artefact writes every key, the
        # checkpoint it came from may predate some, and the report pairs the two by this
        "preprocess": inference_preprocess(bundle.data),
        "input_shape": list(shape or ()),
        "slices": slices,
        "load_s": load_s,
        "warmup_s": warmup[0] if warmup else None,
        "e2e_s": totals,
        "model_s": model,
        "io_s": io,
        "peak_rss_mb": peak,
        "threads": threads,
        "batch_size": int(spec["batch_size"]),
    }
    if len(stages) == 1:
        result.update(_cost(bundle, export, tuple(shape[-2:]) if shape else (0, 0)))
    else:
        result.update(_cascade_cost(stages))
    cases = spec.get("dice_cases") or []
    if cases:
        rows = evaluate_cases(predictor, [_case(c) for c in cases], protocol="full", progress=False)
        summary = summarize_rows(rows, "full")
        result["dice"] = {
            name: {"dice_mean": s["dice_mean"], "dice_global": s["dice_global"]}
            for name, s in summary.items()
        }
        result["dice_cases"] = len(cases)
    return result


def _stage_list(value: Any) -> list[str | None]:
    """A spec's ``ckpt`` / ``artifact``: one path, or a cascade's two."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _cascade_cost(stages: list[tuple]) -> dict[str, Any]:
    """Both stages' parameters; mult-adds per slice averaged over the slices each stage ran
    (so ``2 * mult_adds * slices / model time`` is the cascade's achieved rate)."""
    from kdseg.deploy.artifact import read_metadata

    total_params, total_macs, total_slices = 0, 0, 0
    for bundle, _, artifact, _, timer in stages:
        meta = (read_metadata(artifact, required=False) or {}) if artifact else {}
        cost = _cost(
            bundle, meta.get("export", {}), tuple(timer.shape[-2:]) if timer.shape else (0, 0)
        )
        if cost["params"] is None or cost["mult_adds"] is None:
            return {"params": None, "mult_adds": None, "macs_source": "unknown"}
        total_params += cost["params"]
        total_macs += cost["mult_adds"] * timer.slices
        total_slices += timer.slices
    return {
        "params": total_params,
        "mult_adds": int(total_macs / total_slices) if total_slices else None,
        "macs_source": "cascade, per-slice mean",
    }


def _resolved(path: str | None) -> str | None:
    """Absolute form of a checkpoint path, so runs of one checkpoint can be paired."""
    return None if path is None else str(Path(path).resolve())


def main(argv: list[str] | None = None) -> None:
    """Entry point: read the spec, measure, write the result (errors become a result too)."""
    spec_path, out_path = (argv or sys.argv[1:])[:2]
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = measure(spec)
        result["ok"] = True
    except Exception as exc:  # reported in the table instead of killing the whole benchmark
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        result = {"name": spec.get("name"), "ok": False, "error": f"{type(exc).__name__}: {first}"}
    Path(out_path).write_text(json.dumps(result, default=float))
    if result.get("ok") and "e2e_s" in result:
        print(f"{result['name']}: median {statistics.median(result['e2e_s']):.2f} s per volume")


def _case(spec: dict[str, Any]) -> Any:
    """A :class:`~kdseg.data.sources.Case` from its JSON form (the label map's pairs as
    tuples again)."""
    from kdseg.data.sources import Case

    label_map = spec.get("label_map")
    return Case(
        spec["case_id"],
        Path(spec["image"]),
        Path(spec["label"]),
        None if label_map is None else tuple(tuple(pair) for pair in label_map),
    )


if __name__ == "__main__":
    import atexit
    import gc

    # the interpreter's final collection would traverse every object torch and ONNX Runtime
    # hold, only to free memory the worker gives back (a second of each worker's exit);
    # the result file is written and closed by then (kdseg.cli.boundary.skip_exit_collection)
    atexit.register(gc.freeze)
    main()
