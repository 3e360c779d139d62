"""Thin Hydra entry points, one module per command (``kdseg-<command>`` -> ``kdseg.cli.<command>``).

Each composes its config from ``conf/`` and calls one library function. :func:`command` makes
the entry point and turns every failure into one line on stderr (bad input: exit code 2; see
:mod:`kdseg.cli.boundary`); outputs pass :func:`kdseg.guards.check_output` before work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import kdseg.config  # noqa: F401  (registers the config resolvers)
from kdseg.cli.boundary import CONFIG_PATH, command, guarded, number
from kdseg.errors import InputError
from kdseg.guards import check_output

__all__ = [
    "CONFIG_PATH",
    "build_predictor",
    "command",
    "guarded",
    "number",
    "run_dir",
    "save_run_config",
    "to_dict",
]


def to_dict(cfg: DictConfig) -> dict[str, Any]:
    """Resolved plain-container copy of a config (safe for checkpoints and JSON)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def run_dir() -> Path:
    """The current Hydra run's output folder."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def save_run_config(cfg: DictConfig, inputs: tuple = ()) -> tuple[Path, dict[str, Any]]:
    """Write the resolved config to ``<run dir>/config.yaml``; return the dir and plain config.

    ``inputs`` (the data folder, a teacher checkpoint ...) must not hold the run dir.
    """
    from kdseg.errors import write_text_atomic

    out = check_output(run_dir(), inputs, folder=True, what="run dir")
    write_text_atomic(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    return out, to_dict(cfg)


def build_predictor(
    cfg: DictConfig, threshold: float | None, progress: bool = False
) -> tuple[Any, Any, str, str | None]:
    """The checkpoint or artefact named by ``ckpt`` / ``artifact`` / ``backend`` as a Predictor.

    Shared by ``kdseg-predict`` and ``kdseg-eval``; returns ``(predictor, bundle, backend,
    artifact)`` with the backend and artefact actually used.
    """
    import kdseg.deploy.backends  # noqa: F401  (registers the compile and aoti backends)
    from kdseg.deploy.artifact import resolve_bundle
    from kdseg.eval.inference import Predictor

    threads = number(cfg, "threads", int, minimum=1)
    batch_size = number(cfg, "batch_size", int, minimum=1)
    ckpt = None if OmegaConf.is_missing(cfg, "ckpt") else cfg.ckpt
    bundle, backend, artifact = resolve_bundle(ckpt, cfg.artifact, cfg.backend)
    try:
        predictor = Predictor.from_bundle(
            bundle,
            backend=backend,
            artifact=artifact,
            threads=threads,
            batch_size=batch_size,
            threshold=threshold,
            progress=progress,
        )
    except Exception as exc:
        if not artifact or not type(exc).__module__.startswith("onnxruntime"):
            raise
        first = " ".join(str(exc).split())[:300]
        raise InputError(artifact, f"ONNX Runtime cannot load it ({first})") from None
    return predictor, bundle, backend, artifact
