"""Load a self-describing checkpoint safely: the network, its task and its preprocessing.

Checkpoints are read with ``torch.load(weights_only=True)``: no code from a file ever runs.
Only the ``net.*`` weights are used, so a distilled checkpoint yields the student alone
(no teacher, no adapters).
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdseg.data.preprocess import PreprocessConfig
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


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``; clear errors for missing or foreign files."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, f"not a loadable kdseg checkpoint ({first})") from None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not hparams or "model" not in hparams or "data" not in hparams:
        raise InputError(path, "checkpoint carries no kdseg model/data config (not made by kdseg?)")
    return ckpt


def load_bundle(path: str | Path) -> Bundle:
    """Rebuild the network from the checkpoint's own config and load its ``net.*`` weights."""
    from kdseg.models import build_from_config

    ckpt = read_checkpoint(path)
    hparams = ckpt["hyper_parameters"]
    model = build_from_config(hparams["model"])
    state = {
        k[len(NET_PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(NET_PREFIX)
    }
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(
            path, f"weights do not fit the saved model config ({str(exc).splitlines()[0]})"
        ) from None
    model.eval()
    return Bundle(model, dict(hparams["model"]), dict(hparams["data"]), Path(path))
