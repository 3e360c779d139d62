"""Post-training static int8 quantization with ONNX Runtime, and an honest speed check.

``quant_pre_process`` (shape inference and graph optimisation) then ``quantize_static`` in the
QDQ format with per-channel weights, calibrated on real slices of the training cache. The
first and the last convolution stay in fp32: quantizing the input layer (raw intensities) and
the classifier (the logits the decision is taken on) cost a lot of Dice in practice, while
they are a small share of the compute (STACK_NOTES).

int8 is not always faster on a CPU: ONNX Runtime has no int8 kernel for some operators (PReLU,
so all of ENet's activations), and every quantize / dequantize pair left around them is extra
work. :func:`time_alternating` therefore times the fp32 and int8 files on the same slices,
alternating runs (these cores are shared and noisy), so the export can warn instead of handing
over a slower model silently.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdseg.deploy.onnx_export import INPUT_NAME, onnx_runner, quiet_exporter
from kdseg.errors import InputError, atomic_path

CONV_OPS = ("Conv", "ConvTranspose")
QUANTIZED_OPS: tuple[str, ...] = CONV_OPS
"""Operator types quantized by default: the convolutions, where the compute is.

Quantizing every operator type ONNX Runtime can collapsed the demo-protocol ENet: on 32 check
slices its int8 labels agreed with its fp32 twin at organ Dice 0.774, tumor 0.155 (minmax,
first / last conv in fp32; percentile 0.789 / 0.131 and entropy 0.774 / 0.155: calibration is
not the cause). Convolutions only: organ 0.984, tumor 0.521 (percentile 0.983 / 0.484, entropy
0.984 / 0.521); on the test cases' full volumes, organ Dice against the truth 0.637 against
fp32's 0.651 (all types: 0.292). No single other type is the culprit: convolutions plus
Add, MaxPool, PReLU, BatchNormalization or ScatterND / Pad / Reshape each kept organ Dice at
0.982-0.984; it is the rounding of every intermediate activation of an 80-layer network, all
together, that does it (measured on one demo-protocol ENet, 6 epochs, 32 val/train slices)."""


@dataclass
class QuantizeReport:
    """What was quantized and how it was calibrated."""

    calibration_slices: int
    calibrate_method: str
    activation_type: str
    per_channel: bool
    kept_fp32: list[str]
    symbolic_shape_inference: bool
    op_types: list[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _SliceReader:
    """ONNX Runtime calibration reader: one slice per call, batch 1."""

    def __init__(self, slices: np.ndarray, input_name: str) -> None:
        self._items: Iterator[dict[str, np.ndarray]] = iter(
            {input_name: np.ascontiguousarray(s[None], dtype=np.float32)} for s in slices
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)

    def rewind(self) -> None:  # pragma: no cover - only some calibrators call it
        raise NotImplementedError


def conv_nodes(model: Any) -> list[str]:
    """Names of the convolution nodes of an ONNX graph, in graph (topological) order."""
    return [n.name for n in model.graph.node if n.op_type in CONV_OPS]


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    """Run a block with ``path`` as the current directory (ORT drops debug files into it)."""
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def preprocess_for_quantization(source: Path, target: Path) -> bool:
    """``quant_pre_process`` with symbolic shape inference, retried without it (ENet needs that).

    Runs inside ``target``'s folder: a failed symbolic shape inference leaves
    ``sym_shape_infer_temp.onnx`` and a ``<uuid>.data`` file in the current directory.
    Returns whether symbolic shape inference was used.
    """
    from onnxruntime.quantization import quant_pre_process

    source, target = source.resolve(), target.resolve()
    with _working_directory(target.parent):
        try:
            quant_pre_process(str(source), str(target), skip_symbolic_shape=False)
            return True
        except Exception:  # symbolic shape inference fails on some graphs (ENet's max-unpool)
            quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
            return False


def quantize_int8(
    fp32_path: str | Path,
    target: str | Path,
    calibration: np.ndarray,
    keep_fp32: tuple[str, ...] = ("first", "last"),
    per_channel: bool = True,
    calibrate_method: str = "minmax",
    activation_type: str = "uint8",
    op_types: tuple[str, ...] | None = QUANTIZED_OPS,
) -> QuantizeReport:
    """Write an int8 (QDQ) copy of ``fp32_path`` to ``target``, calibrated on ``calibration``.

    ``calibration`` holds ``(N, C, h, w)`` model-input slices. ``keep_fp32`` names which
    convolutions stay in floating point: ``"first"``, ``"last"`` (or node names). The fp32
    file's metadata is carried over (the caller updates it with the int8 facts).
    ``activation_type`` ``uint8`` (with int8 weights: the U8S8 kernels of x86 CPUs without
    VNNI) or ``int8``. ``op_types``: the operator types quantized (``None``: every type ONNX
    Runtime can quantize).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if calibrate_method not in methods:
        raise InputError(
            None, f"unknown calibrate_method {calibrate_method!r}; use {', '.join(methods)}"
        )
    activations = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    if activation_type not in activations:
        raise InputError(None, f"unknown activation_type {activation_type!r}; use uint8 or int8")
    if len(calibration) == 0:
        raise InputError(None, "int8 calibration needs at least one slice")
    with tempfile.TemporaryDirectory(prefix="kdseg-quant-") as tmp, quiet_exporter():
        prepped = Path(tmp) / "prepped.onnx"
        symbolic = preprocess_for_quantization(Path(fp32_path), prepped)
        graph = onnx.load(str(prepped))
        convs = conv_nodes(graph)
        named = {"first": convs[:1], "last": convs[-1:]}
        present = {node.op_type for node in graph.graph.node}
        unknown = [t for t in op_types or () if t not in present and not onnx.defs.has(t)]
        if unknown:  # a typo ("conv") would quantize nothing and still be called int8
            raise InputError(
                None,
                f"int8.op_types: {unknown} is no ONNX operator (this network's: "
                f"{', '.join(sorted(present))})",
            )
        names = {node.name for node in graph.graph.node}
        strays = [k for k in keep_fp32 if k not in named and k not in names]
        if strays:
            raise InputError(
                None, f"int8.keep_fp32: no node named {strays[0]!r} (first, last or a node name)"
            )
        exclude = sorted({n for key in keep_fp32 for n in named.get(key, [key])})
        with atomic_path(target, suffix=".onnx") as out:
            quantize_static(
                str(prepped),
                str(out),
                _SliceReader(calibration, INPUT_NAME),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=activations[activation_type],
                weight_type=QuantType.QInt8,
                nodes_to_exclude=exclude,
                calibrate_method=methods[calibrate_method],
                op_types_to_quantize=list(op_types) if op_types else None,
            )
            model = onnx.load(str(out))
            if not any(node.op_type == "QuantizeLinear" for node in model.graph.node):
                raise InputError(
                    None,
                    "int8: no layer was quantized (int8.op_types / int8.keep_fp32 leave none): "
                    "the file would be fp32 under an int8 name",
                )
            del model.metadata_props[:]
            model.metadata_props.extend(
                onnx.load(str(fp32_path), load_external_data=False).metadata_props
            )
            onnx.save(model, str(out))
    return QuantizeReport(
        len(calibration),
        calibrate_method,
        activation_type,
        per_channel,
        exclude,
        symbolic,
        list(op_types) if op_types else None,
    )


def time_alternating(
    paths: dict[str, str | Path],
    slices: np.ndarray,
    threads: int = 2,
    repeats: int = 3,
    batch: int = 16,
) -> dict[str, float]:
    """Median seconds per slice of each ONNX file, in batches of ``batch`` slices (as
    ``kdseg-predict`` runs them), alternating between the files.

    Each repeat runs every file once over all ``slices`` (after one warm-up batch each), so a
    burst of load on the shared cores hits all of them alike.
    """
    runners = {name: onnx_runner(path, threads=threads) for name, path in paths.items()}
    batches = [slices[i : i + batch] for i in range(0, len(slices), max(batch, 1))]
    for run in runners.values():
        run(batches[0])
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(max(repeats, 1)):
        for name, run in runners.items():
            start = time.perf_counter()
            for x in batches:
                run(x)
            samples[name].append((time.perf_counter() - start) / len(slices))
    return {name: statistics.median(v) for name, v in samples.items()}
