"""Student-only ONNX export with dynamic batch and spatial size, checked against PyTorch.

The dynamo exporter (``torch.onnx.export(..., dynamo=True)``) is used for every network:
ENet's ``max_unpool2d`` does not export with the legacy one. Batch is a named dynamic
dimension; height and width are ``Dim.AUTO``: dynamic wherever the network allows it, fixed
to the example size otherwise (the file records which, in :func:`input_dims`). The graph is
checked against the eager network on real slices by argmax agreement, the Dice of each
foreground class between the two argmax maps, and maximum absolute difference: in flat regions
ENet's 2x2 max-pool ties can choose another unpooling position in ONNX Runtime (logits then
differ locally, argmax barely), so agreement and Dice are the deciding numbers.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdseg.deploy.artifact import set_onnx_metadata
from kdseg.deploy.onnx_passes import prelu_as_relu
from kdseg.errors import InputError, atomic_path
from kdseg.eval.inference import BACKENDS, Backend, check_logits
from kdseg.models import LogitsOnly

INPUT_NAME, OUTPUT_NAME = "image", "logits"
#: the ONNX opset written (torch 2.13's default, IR version 10): the lean runtime's floor,
#: onnxruntime 1.20, runs opsets up to 21 and IR up to 10; pinned so that a newer torch
#: exporting a newer opset by default cannot write files that floor does not load
ONNX_OPSET = 20
#: argmax agreement with PyTorch below which an fp32 export is reported as wrong (ENet's
#: max-unpool ties in flat regions cost at most about 1e-5)
MIN_AGREEMENT = 0.999
#: the same for int8, which approximates by design (whole-volume Dice is what to judge it by)
MIN_AGREEMENT_INT8 = 0.95
#: lowest foreground-class Dice against the reference's argmax before an export is reported as
#: wrong: pixel agreement alone hides a model that drops the organ (background dominates)
MIN_FOREGROUND_DICE = 0.99
MIN_FOREGROUND_DICE_INT8 = 0.9


@dataclass
class Comparison:
    """How closely a backend reproduces a reference on the same slices."""

    reference: str
    slices: int
    max_abs_diff: float
    argmax_agreement: float
    foreground_dice: float | None  # lowest over the foreground classes the reference predicts

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def acceptable(self, min_agreement: float, min_dice: float) -> bool:
        """Pixel agreement and foreground Dice both at least the given minimums."""
        dice_ok = self.foreground_dice is None or self.foreground_dice >= min_dice
        return self.argmax_agreement >= min_agreement and dice_ok

    def __str__(self) -> str:
        dice = "-" if self.foreground_dice is None else f"{self.foreground_dice:.4f}"
        return (
            f"vs {self.reference} on {self.slices} slices: argmax agreement "
            f"{self.argmax_agreement:.6f}, lowest foreground Dice {dice}, "
            f"max |diff| {self.max_abs_diff:.3g}"
        )


def foreground_dice(got: np.ndarray, want: np.ndarray, num_classes: int) -> float | None:
    """Lowest Dice between label maps ``got`` and ``want`` over the foreground classes present
    in ``want`` (``None`` when it has none)."""
    scores = []
    for c in range(1, num_classes):
        target = want == c
        if target.any():
            hit = got == c
            scores.append(2 * float((hit & target).sum()) / float(hit.sum() + target.sum()))
    return min(scores) if scores else None


#: library loggers that report routine progress at INFO / WARNING level during export
NOISY_LOGGERS = (
    "torch.onnx",
    "torch.export",
    "torch._dynamo",
    "torch._inductor",
    "onnxscript",
    "onnx_ir",
    "onnxruntime",
)


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence exporter / quantizer progress messages and deprecation warnings (errors still raise).

    The CLIs log INFO to stdout; the exporters and ONNX Runtime's quantization tools report
    every graph pass there ("Removed 816 unused nodes"), which would bury the export summary.
    """
    loggers = [logging.getLogger(n) for n in ("", *NOISY_LOGGERS)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def dynamic_shapes_spec(static: bool = False) -> tuple[dict[int, Any]]:
    """Named dynamic batch; height and width as dynamic as the network allows, or fixed."""
    dim = torch.export.Dim
    return ({0: dim("batch")},) if static else ({0: dim("batch"), 2: dim.AUTO, 3: dim.AUTO},)


def example_input(in_channels: int, size: tuple[int, int], batch: int = 2) -> torch.Tensor:
    """An export example; batch 2 so the batch dimension is not specialised to 1."""
    return torch.zeros(batch, in_channels, *size)


def export_onnx(
    model: nn.Module,
    target: str | Path,
    example: torch.Tensor,
    metadata: dict[str, Any] | None = None,
    static: bool = False,
) -> Path:
    """Export ``model``'s logits to one ONNX file (no external data), atomically.

    The graph gets the exact rewrites of :mod:`kdseg.deploy.onnx_passes` (PReLU).

    ``metadata`` is embedded as the kdseg ``metadata_props`` entry (see
    :mod:`kdseg.deploy.artifact`). ``static`` fixes height and width to the example's.
    """
    import onnx

    net = LogitsOnly(model).eval()
    try:
        with quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                net,
                (example,),
                dynamo=True,
                opset_version=ONNX_OPSET,
                external_data=False,
                dynamic_shapes=dynamic_shapes_spec(static),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                verbose=False,
            )
    except Exception as exc:  # torch.export / onnxscript raise many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(target, f"ONNX export failed: {first}") from exc
    proto = program.model_proto
    prelu_as_relu(proto)  # exact, and faster in ONNX Runtime (the export check runs on it)
    if metadata is not None:
        set_onnx_metadata(proto, metadata)
    with atomic_path(target, suffix=".onnx") as tmp:
        onnx.save(proto, str(tmp))
    return Path(target)


def update_onnx_metadata(path: str | Path, metadata: dict[str, Any]) -> None:
    """Rewrite the kdseg metadata of an ONNX file in place, atomically."""
    import onnx

    proto = onnx.load(str(path))
    set_onnx_metadata(proto, metadata)
    with atomic_path(path, suffix=".onnx") as tmp:
        onnx.save(proto, str(tmp))


def input_dims(path: str | Path) -> list[int | str]:
    """The ONNX input's dimensions: ints where fixed, names where dynamic."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param if d.dim_param else int(d.dim_value) for d in dims]


def run_batched(backend: Backend, slices: np.ndarray, batch: int = 4) -> np.ndarray:
    """Logits of ``backend`` for ``(N, C, h, w)`` slices, ``batch`` at a time."""
    return np.concatenate(
        [backend(np.ascontiguousarray(slices[i : i + batch])) for i in range(0, len(slices), batch)]
    )


def compare(
    candidate: Backend, reference: Backend, slices: np.ndarray, reference_name: str
) -> Comparison:
    """Argmax agreement, foreground Dice and max |logit difference| of two backends."""
    got, want = run_batched(candidate, slices), run_batched(reference, slices)
    if got.shape != want.shape:
        raise RuntimeError(f"exported model gives logits {got.shape}, PyTorch {want.shape}")
    got_labels, want_labels = got.argmax(1), want.argmax(1)
    return Comparison(
        reference_name,
        len(slices),
        float(np.abs(got - want).max()),
        float((got_labels == want_labels).mean()),
        foreground_dice(got_labels, want_labels, got.shape[1]),
    )


def torch_reference(model: nn.Module) -> Backend:
    """The eager network as a backend (the reference every export is checked against)."""
    return BACKENDS["torch"](model)


def onnx_runner(path: str | Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """An ONNX Runtime backend for ``path`` (the registered ``onnx`` backend) that refuses
    NaN or Inf logits, naming the file, as :class:`~kdseg.eval.inference.Predictor` does: the
    export's checks call it directly."""
    run = BACKENDS["onnx"](path, threads=threads)
    return lambda x: check_logits(run(x), path)
