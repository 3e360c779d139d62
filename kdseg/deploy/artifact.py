"""Self-describing deployment artefacts: the checkpoint's data and model info travel with the file.

An exported network (ONNX, quantized ONNX, AOTInductor ``.pt2``) is only usable if whoever runs
it feeds it exactly what it saw in training: the task, the 2.5D context and the preprocessing.
Every artefact therefore carries one JSON document (:func:`artifact_metadata`):

* ONNX: a ``metadata_props`` entry named ``kdseg`` (inside the model file itself);
* ``.pt2``: a sidecar ``<artefact>.json`` next to the package (AOTInductor packages have no
  free-form metadata field that survives every loader).

:func:`load_artifact` turns that document back into a :class:`~kdseg.eval.checkpoint.Bundle`
without a network (``model=None``), so ``kdseg-predict`` / ``kdseg-eval`` run an artefact with
no checkpoint; :func:`resolve_bundle` is the one place the CLIs decide between checkpoint and
artefact and pick the backend.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdseg.data.schema import check_data_info, check_model_info
from kdseg.deploy.provenance import export_provenance, file_sha256
from kdseg.errors import InputError, write_text_atomic
from kdseg.eval.checkpoint import Bundle, load_bundle
from kdseg.eval.inference import onnx_session

METADATA_KEY = "kdseg"
#: 1: the first artefacts; 2: ``provenance`` recorded and the data section's preprocessing
#: complete (every key of :data:`REQUIRED_KEYS`, defaults filled in at export)
SCHEMA_VERSION = 2
#: The data keys inference reads that an artefact of each schema always carried (an export
#: copies the checkpoint's data section, whose preprocessing config held these keys from
#: kdseg's first commit on): one missing is refused, not run with a default. Preprocessing keys
#: added later (spacing, ROI, window level, label resize) keep their defaults when absent from
#: a schema 1 artefact, which predates them; a schema 2 artefact carries them all.
REQUIRED_KEYS: dict[int, tuple[str, ...]] = {
    1: (
        "context",
        *(
            f"preprocess.{k}"
            for k in (
                "window",
                "axcodes",
                "body_crop",
                "body_margin",
                "in_plane_size",
                "crop_size",
                "store_dtype",
            )
        ),
    ),
}
REQUIRED_KEYS[2] = (
    *REQUIRED_KEYS[1],
    *(
        f"preprocess.{k}"
        for k in (
            "spacing_mm",
            "roi",
            "roi_margin_mm",
            "roi_components",
            "window_level",
            "label_resize",
        )
    ),
)
SUFFIX_BACKENDS = {".onnx": "onnx", ".pt2": "aoti"}
#: backends that run an artefact file; the others ("torch", "compile") need the checkpoint's network
ARTIFACT_BACKENDS = ("onnx", "aoti")


@dataclass
class ArtifactBundle(Bundle):
    """A :class:`Bundle` read from an artefact: no network, plus the artefact's full metadata."""

    metadata: dict[str, Any] = field(default_factory=dict)


#: model-config keys that say how the torch network ran in training, not what it is
RUN_OPTIONS = ("channels_last", "compile")


def artifact_metadata(bundle: Bundle, **export: Any) -> dict[str, Any]:
    """The JSON document an artefact carries: data info, model config and export facts.

    ``export`` holds what the export step knows (format, precision, pruning ratio, parameter
    count, checks against PyTorch ...); it is stored under ``"export"``. The preprocessing is
    written complete (a checkpoint of an older kdseg lacks the keys added since: their
    defaults, which its inference used); ``provenance`` records the kdseg version and commit
    that exported it and the checkpoint's sha256.
    """
    from kdseg.data.preprocess_config import PreprocessConfig

    # not the training split: an artefact goes to hospitals, and case ids can name patients
    data = {k: v for k, v in bundle.data.items() if k != "split"}
    data["context"] = int(data.get("context", 0))
    data["preprocess"] = PreprocessConfig.from_dict(data["preprocess"]).to_dict()
    return {
        "schema": SCHEMA_VERSION,
        # the exported graph has its own layout: how the torch network ran is not part of it
        "model": {k: v for k, v in bundle.model_config.items() if k not in RUN_OPTIONS},
        "data": data,
        "source_checkpoint": str(Path(bundle.path).resolve()),
        "provenance": export_provenance(bundle.path),
        "export": export,
    }


def sidecar_path(path: str | Path) -> Path:
    """``<artefact>.json``: where a ``.pt2`` package keeps its metadata."""
    return Path(f"{path}.json")


def backend_for(path: str | Path) -> str:
    """The inference backend that runs an artefact file, from its suffix."""
    suffix = Path(path).suffix
    if Path(path).is_dir():
        raise InputError(path, "a folder, not an artefact file (.onnx or .pt2)")
    if suffix not in SUFFIX_BACKENDS:
        raise InputError(path, f"unknown artefact type {suffix!r}; expected .onnx or .pt2")
    return SUFFIX_BACKENDS[suffix]


def set_onnx_metadata(model: Any, meta: dict[str, Any]) -> None:
    """Store ``meta`` as JSON in an ``onnx.ModelProto``'s ``metadata_props`` (replacing ours)."""
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta, default=_jsonable)


def sidecar_text(meta: dict[str, Any]) -> str:
    """The text of a ``.pt2`` package's sidecar holding ``meta``."""
    return json.dumps(meta, indent=1, default=_jsonable) + "\n"


def write_sidecar(path: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``<path>.json`` atomically (the metadata of a ``.pt2`` package)."""
    return write_text_atomic(sidecar_path(path), sidecar_text(meta))


def made_from(path: str | Path, ckpt: str | Path) -> bool:
    """Whether the existing file ``path`` is a kdseg artefact (or a ``.pt2`` package's sidecar)
    exported from the checkpoint ``ckpt``: the only file ``kdseg-export`` replaces without
    ``overwrite=true``. Anything else, unreadable files included, is somebody's (False).

    The checkpoint is recognised by its sha256 where the artefact records one (a moved or
    renamed checkpoint is the same; another file at the same path is not), by its path for an
    artefact of an older kdseg."""
    path = Path(path)
    try:
        if path.name.endswith(".pt2.json"):
            meta = json.loads(path.read_text())
        else:
            meta = read_metadata(path, required=False)
    except (InputError, OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return False
    if not isinstance(meta, dict):
        return False
    prov = meta.get("provenance")
    sha = prov.get("checkpoint_sha256") if isinstance(prov, dict) else None
    if isinstance(sha, str):
        try:
            return sha == file_sha256(ckpt)
        except OSError:
            return False
    return meta.get("source_checkpoint") == str(Path(ckpt).resolve())


def _jsonable(value: Any) -> Any:
    """``json.dumps`` fallback: numpy scalars, tuples and paths become plain values."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def read_metadata(path: str | Path, required: bool = True) -> dict[str, Any] | None:
    """The kdseg metadata of an artefact; :class:`InputError` if the file is missing or corrupt.

    Also validates the file itself (an ONNX protobuf that parses, a ``.pt2`` that is a zip
    package), so a broken artefact is reported in one line before any runtime touches it.
    With ``required=False`` a valid file without kdseg metadata gives ``None``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "artefact not found")
    kind = backend_for(path)
    text = None
    if kind == "onnx":
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # onnx raises DecodeError, ValueError, OSError ...
            raise InputError(
                path, f"not a loadable ONNX model ({type(exc).__name__}); corrupt?"
            ) from None
        if not model.graph.node:
            raise InputError(path, "ONNX file has an empty graph; corrupt or truncated?")
        check_onnx_model(path, model)
        text = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    else:
        if not zipfile.is_zipfile(path):
            raise InputError(path, "not an AOTInductor .pt2 package (not a zip archive); corrupt?")
        side = sidecar_path(path)
        text = side.read_text() if side.is_file() else None
    return parse_metadata(path, text, required)


def parse_metadata(
    path: str | Path, text: str | None, required: bool = True
) -> dict[str, Any] | None:
    """The kdseg metadata document ``text`` of the artefact ``path``, checked; ``None`` when
    there is none and ``required`` is false (:class:`InputError` when it is true)."""
    kind = backend_for(path)
    if text is None:
        if required:
            where = "metadata_props" if kind == "onnx" else f"sidecar {sidecar_path(path).name}"
            raise InputError(
                path, f"no kdseg metadata ({where}); pass the checkpoint with ckpt=..."
            )
        return None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        raise InputError(path, "kdseg metadata is not valid JSON") from None
    if not isinstance(meta, dict) or "data" not in meta or "model" not in meta:
        raise InputError(path, "kdseg metadata lacks the data / model sections")
    where = "ONNX metadata" if kind == "onnx" else "sidecar metadata"
    schema = meta.get("schema")
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        raise InputError(path, f"{where}: schema is {schema!r}, not a kdseg schema version")
    if schema > SCHEMA_VERSION:
        raise InputError(
            path,
            f"{where}: schema {schema} was written by a newer kdseg (this one reads up to "
            f"{SCHEMA_VERSION}); update kdseg",
        )
    check_model_info(path, meta["model"], where)
    check_data_info(path, meta["data"], where)
    check_required_keys(path, meta["data"], schema, where)
    return meta


def check_required_keys(path: str | Path, data: dict[str, Any], schema: int, where: str) -> None:
    """Refuse an artefact whose data section lacks a key inference reads that every artefact of
    its ``schema`` carries (:data:`REQUIRED_KEYS`): run with a default instead, it would feed
    the network other slices than it was trained on, silently."""
    for key in REQUIRED_KEYS[schema]:
        section, _, name = key.rpartition(".")
        holder = data.get(section) if section else data
        if not isinstance(holder, dict) or name not in holder:
            raise InputError(
                path,
                f"{where}: data.{key} is missing (every schema {schema} artefact carries it): "
                "an incomplete or hand-edited file; export it again from its checkpoint",
            )


def check_onnx_model(path: str | Path, model: Any) -> None:
    """Refuse an ONNX graph the checker rejects (a node removed, a dangling input ...) and
    weights with NaN or Inf, with onnx and numpy alone (no runtime, no torch)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, f"invalid ONNX graph ({first})") from None
    bad: dict[str, int] = {}
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            continue  # weights in a side file are not loaded here
        array = numpy_helper.to_array(init)
        if np.issubdtype(array.dtype, np.floating):
            n = int((~np.isfinite(array)).sum())
            if n:
                bad[init.name] = n
    if bad:
        raise InputError(
            path,
            f"{sum(bad.values())} NaN or Inf weight value(s) in {len(bad)} tensor(s) "
            f"(first: {next(iter(bad))}); a diverged or damaged export",
        )


#: What must agree between an artefact and the checkpoint given to describe it.
SAME_MODEL_KEYS = ("task", "context", "in_channels", "num_classes")


def check_same_model(
    artifact: str | Path, meta_data: dict[str, Any], ckpt: str | Path, ckpt_data: dict[str, Any]
) -> None:
    """An artefact run with ``ckpt=`` must be an export of a model of the same kind: the
    checkpoint says how to read its outputs, so a tumor checkpoint beside an organ artefact
    would report the whole organ as tumor."""
    for key in SAME_MODEL_KEYS:
        if meta_data.get(key) != ckpt_data.get(key):
            raise InputError(
                artifact,
                f"its data.{key} is {meta_data.get(key)!r} but {Path(ckpt).name}'s is "
                f"{ckpt_data.get(key)!r}: not an export of that checkpoint's model",
            )
    # the checkpoint's preprocessing is what the artefact would be fed: a network exported with
    # another grid or window (a graph with dynamic height and width takes any) reads nonsense
    ours, theirs = (inference_preprocess(d) for d in (meta_data, ckpt_data))
    if ours is not None and theirs is not None and ours != theirs:
        key = next(k for k in ours if ours[k] != theirs.get(k))
        raise InputError(
            artifact,
            f"its data.preprocess.{key} is {ours[key]!r} but {Path(ckpt).name}'s is "
            f"{theirs.get(key)!r}: not an export of that checkpoint's model",
        )


def inference_preprocess(data: dict[str, Any]) -> dict[str, Any] | None:
    """The preprocessing settings inference uses (defaults filled in; the cache's storage type
    and the training box jitter left out), or None where ``data`` has none."""
    from kdseg.data.preprocess_config import PreprocessConfig

    if not isinstance(data.get("preprocess"), dict):
        return None
    plain = PreprocessConfig.from_dict(data["preprocess"]).to_dict()
    for key in ("store_dtype", "roi_jitter_mm"):
        plain.pop(key, None)
    return plain


def check_graph_io(path: str | Path, session: Any, data: dict[str, Any]) -> None:
    """The ONNX graph's input channels and output classes are the ones its description (the
    artefact's metadata or the checkpoint beside it) says; dynamic dimensions pass."""
    for kind, port, key in (
        ("input channels", session.get_inputs()[0], "in_channels"),
        ("output classes", session.get_outputs()[0], "num_classes"),
    ):
        shape = port.shape
        found = shape[1] if len(shape) > 1 else None
        if isinstance(found, int) and found != data[key]:
            raise InputError(
                path,
                f"the graph has {found} {kind} but its description says data.{key}="
                f"{data[key]}: the metadata or the checkpoint given is not this model's",
            )


def load_artifact(path: str | Path, meta: dict[str, Any] | None = None) -> ArtifactBundle:
    """An :class:`ArtifactBundle` (``model=None``) rebuilt from an artefact's own metadata
    (``meta``: what :func:`read_metadata` already returned for ``path``)."""
    meta = read_metadata(path) if meta is None else meta
    assert meta is not None
    return ArtifactBundle(
        model=None,
        model_config=dict(meta["model"]),
        data=dict(meta["data"]),  # type: ignore[arg-type]
        path=Path(path),
        metadata=meta,
    )


def resolve_bundle(
    ckpt: str | None, artifact: str | None, backend: str, threads: int | None = None
) -> tuple[Bundle, str, str | None]:
    """What the predict / eval commands run: ``(bundle, backend, artifact)``.

    * checkpoint only: its network with ``backend`` (torch or compile);
    * checkpoint and artefact: the artefact runs, the checkpoint describes it;
    * artefact only (``ckpt=null``): the artefact runs and describes itself.

    ``backend=torch`` with an artefact means "the artefact's own runtime" (onnx for ``.onnx``,
    aoti for ``.pt2``). Artefacts are validated first, so a corrupt file is one clear error.

    ``backend=onnx`` reads the metadata from the ONNX Runtime session that will run the file
    (:func:`~kdseg.eval.inference.onnx_session` with ``threads``, kept for the backend): the
    runtime's loader refuses a corrupt or inconsistent graph, and the predictor refuses NaN or
    Inf logits. The ``onnx`` package's checker and weight scan (:func:`read_metadata`) run in
    ``kdseg-export`` and for the other backends.
    """
    if artifact:
        artifact = str(artifact)
        inferred = backend_for(artifact)
        if backend in ("torch", None):
            backend = inferred
        elif backend != inferred:
            raise InputError(
                artifact,
                f"backend={backend} cannot run a {Path(artifact).suffix} file; "
                f"use backend={inferred}",
            )
        session = None
        if backend == "onnx":  # the runtime's own loader validates the file, once
            if not Path(artifact).is_file():
                raise InputError(artifact, "artefact not found")
            session = onnx_session(artifact, threads)
            text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
            meta = parse_metadata(artifact, text, required=not ckpt)
        else:
            meta = read_metadata(artifact, required=not ckpt)  # validates the file, once
        bundle = load_bundle(ckpt) if ckpt else load_artifact(artifact, meta)
        if ckpt and meta is not None:
            check_same_model(artifact, meta["data"], ckpt, bundle.data)
        if session is not None:
            check_graph_io(artifact, session, bundle.data)
        return bundle, backend, artifact
    if backend in ARTIFACT_BACKENDS:
        raise InputError(
            None, f"backend={backend} needs artifact=PATH (an exported .onnx / .pt2 file)"
        )
    if not ckpt:
        raise InputError(None, "give ckpt=PATH (a checkpoint) or artifact=PATH (an exported model)")
    return load_bundle(ckpt), backend, None
