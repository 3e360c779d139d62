"""Load a self-describing checkpoint safely: the network, its task and its preprocessing.

Checkpoints are read with ``torch.load(weights_only=True)``: no code from a file ever runs.
Their model / data sections are validated and NaN / Inf weights are refused at load.
Only the ``net.*`` weights are used, so a distilled checkpoint yields the student alone
(no teacher, no adapters).
"""

from __future__ import annotations

import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdseg.data.preprocess_config import PreprocessConfig
from kdseg.data.schema import check_data_info, check_model_info
from kdseg.data.tasks import Task
from kdseg.errors import InputError

if TYPE_CHECKING:  # Bundle is also what an ONNX artefact describes itself with: no torch there
    from torch import nn

NET_PREFIX = "net."


@dataclass
class Bundle:
    """A network ready for inference plus what it needs to be fed correctly."""

    model: nn.Module
    model_config: dict[str, Any]
    data: dict[str, Any]
    path: Path

    @property
    def task(self) -> Task:
        return Task(self.data["task"])

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.data["preprocess"])

    @property
    def context(self) -> int:
        return int(self.data.get("context", 0))


def run_folder(ckpt: str | Path) -> Path:
    """Where a checkpoint's results go: its run folder for ``<run>/checkpoints/x.ckpt``, else
    the checkpoint's own folder (never a folder above an unrelated one)."""
    home = Path(ckpt).resolve().parent
    return home.parent if home.name == "checkpoints" else home


def check_model_no_leak(
    data_info: object,
    dataset: str,
    split: str,
    case_ids: list[str],
    model: str | Path,
    root: str | Path | None,
) -> None:
    """:func:`kdseg.data.manifest.check_no_leak` for the model in ``model`` (a checkpoint),
    pointing a refusal at its run's ``split.json``: kdseg-eval and kdseg-bench."""
    from kdseg.data.manifest import RUN_SPLIT_NAME, check_no_leak

    run_split = run_folder(model) / RUN_SPLIT_NAME
    check_no_leak(data_info, dataset, split, case_ids, model, run_split, root=root)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``; clear errors for missing or foreign files.

    The model and data sections are checked (:mod:`kdseg.data.schema`) and a ``state_dict``
    must be present, so a file kdseg did not write fails here, in one line naming it.
    """
    import torch

    path = Path(path)
    if path.is_dir():
        raise InputError(path, "a folder, not a checkpoint file (a run's are in checkpoints/)")
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    try:
        with warnings.catch_warnings():  # torch warns about some foreign files before failing
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, BadZipFile, RuntimeError, EOFError, ...
        reason = load_reason(exc)
        raise InputError(
            path, "not a checkpoint file" + (f" ({reason})" if reason else "")
        ) from None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    # a mapping: ``"model" in "model data"`` holds for a string too (then a TypeError)
    if not isinstance(hparams, dict) or "model" not in hparams or "data" not in hparams:
        raise InputError(path, "checkpoint carries no kdseg model/data config (not made by kdseg?)")
    check_model_info(path, hparams["model"], "checkpoint")
    check_data_info(path, hparams["data"], "checkpoint")
    if not isinstance(ckpt.get("state_dict"), dict):
        raise InputError(path, "checkpoint has no state_dict (no weights)")
    return ckpt


def load_reason(exc: Exception) -> str | None:
    """Why ``torch.load`` failed, in a few words, or ``None`` when torch said nothing a user
    can read (a text file fails on a bare byte: ``KeyError: '101'``). Its weights-only refusals
    advise loading with ``weights_only=False``, which would run code from the file: never
    repeated here."""
    text = str(exc).strip()
    if "weights_only" in text or "Weights only load failed" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        return (
            f"it holds the Python object {found.group(1)}, which is never loaded"
            if found
            else "not a weights-only pickle"
        )
    if isinstance(exc, zipfile.BadZipFile) or "zip archive" in text:
        return "not a zip archive, or cut short"
    if isinstance(exc, EOFError) and not text:
        return "empty, or cut short"
    first = text.splitlines()[0] if text else ""
    if not re.search(r"[A-Za-z]{3}", first) or len(first) > 80:  # "(101)", "174812789"
        return None
    return first


def check_finite_weights(path: str | Path, state: dict[str, Any]) -> None:
    """Refuse weights with NaN or Inf: such a network predicts garbage (often all background)."""
    import torch

    bad = {
        key: int((~torch.isfinite(value)).sum())
        for key, value in state.items()
        if torch.is_tensor(value) and value.is_floating_point()
    }
    bad = {key: n for key, n in bad.items() if n}
    if bad:
        first = next(iter(bad))
        raise InputError(
            path,
            f"{sum(bad.values())} NaN or Inf weight value(s) in {len(bad)} tensor(s) "
            f"(first: {first}); a diverged or damaged checkpoint",
        )


def load_bundle(path: str | Path) -> Bundle:
    """Rebuild the network from the checkpoint's own config and load its ``net.*`` weights."""
    from kdseg.models import build_from_config

    ckpt = read_checkpoint(path)
    hparams = ckpt["hyper_parameters"]
    try:
        model = build_from_config(hparams["model"], encoder_weights=False)
    except (KeyError, TypeError, ValueError, InputError) as exc:
        message = exc.message if isinstance(exc, InputError) else exc.args[0] if exc.args else exc
        raise InputError(path, f"checkpoint: cannot build its model ({message})") from None
    state = {
        k[len(NET_PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(NET_PREFIX)
    }
    check_finite_weights(path, state)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(
            path, f"weights do not fit the saved model config ({str(exc).splitlines()[0]})"
        ) from None
    model.eval()
    return Bundle(model, dict(hparams["model"]), dict(hparams["data"]), Path(path))
