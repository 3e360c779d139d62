"""AOTInductor packages: the network compiled ahead of time into a ``.pt2`` that needs no compiler.

``torch.export`` captures the logits graph (dynamic batch, height and width where the network
allows it, as for ONNX), ``torch._inductor.aoti_compile_and_package`` compiles it to a shared
library inside a ``.pt2`` zip, and ``torch._inductor.aoti_load_package`` runs it later with no
compiler and no Python model code. Compiling C++ takes minutes on two cores, once per export.
The package's kdseg metadata lives in the ``<package>.json`` sidecar (see
:mod:`kdseg.deploy.artifact`).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdseg.deploy.artifact import write_sidecar
from kdseg.deploy.onnx_export import dynamic_shapes_spec, quiet_exporter
from kdseg.errors import InputError, atomic_path
from kdseg.models import LogitsOnly


def export_aoti(
    model: nn.Module,
    target: str | Path,
    example: torch.Tensor,
    metadata: dict[str, Any] | None = None,
    static: bool = False,
) -> Path:
    """Compile ``model``'s logits into the ``.pt2`` package ``target`` (atomically) + sidecar.

    ``static`` fixes height and width to the example's (faster kernels, one input size).
    """
    target = Path(target)
    if target.suffix != ".pt2":
        raise InputError(target, "an AOTInductor package must be named *.pt2")
    net = LogitsOnly(model).eval()
    with quiet_exporter(), torch.no_grad():
        program = torch.export.export(net, (example,), dynamic_shapes=dynamic_shapes_spec(static))
        with atomic_path(target, suffix=".pt2") as tmp:
            tmp.unlink()  # the packager refuses to overwrite
            torch._inductor.aoti_compile_and_package(program, package_path=str(tmp))
    if metadata is not None:
        write_sidecar(target, metadata)
    return target


def load_aoti(path: str | Path) -> Any:
    """The compiled runner of a ``.pt2`` package (callable on a tensor); no compilation happens."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "AOTInductor package not found")
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return torch._inductor.aoti_load_package(os.fspath(path))
    except Exception as exc:  # a foreign or truncated zip raises RuntimeError and others
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, f"cannot load AOTInductor package ({first[:200]})") from None
