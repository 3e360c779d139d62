"""Connected-component postprocessing of predicted labels (beyond the paper; default off).

The idea is nnU-Net's (v2, ``nnunetv2/postprocessing/remove_connected_components.py``):
remove all but the largest connected component of the foreground, and do so only where it
raises Dice on the validation cases, never deciding on the test split. kdseg's 2D slice
models leave islands: false-positive blobs off the organ, tumor outside the organ. EMKD's
protocol has none of this; ``postprocess=none`` is the default everywhere.

``largest`` (:func:`keep_largest`) keeps the largest 26-connected component of the organ and
sets every other foreground voxel to background. The organ is labels 1 and 2 together (tumor
is part of the organ in LiTS and KiTS, as :data:`~kdseg.data.tasks.EVAL_CLASSES` scores it),
so a tumor blob that neither touches nor lies inside the kept organ goes with the organ's
islands, and a tumor inside or on it stays. A paired organ keeps its ``N`` largest components,
a further component only at a tenth of the largest's size or more: the rule, and the code, of
a cascade's organ box (:func:`kdseg.data.roi.largest_components`). ``N`` is
:func:`components_to_keep`'s: the model's ``preprocess.roi_components`` where set, else by its
``data.organ`` (liver 1, kidney 2); a model that records neither is refused. nnU-Net goes on
to try the same per label; kdseg does not: the largest tumor alone would drop every other
lesion. A tumor model (``data.task=tumor``) predicts no organ, so ``largest`` is refused
for it. :func:`plan` makes both decisions, once a model is loaded, for every command that
postprocesses; :func:`check_plan` checks a ``(mode, keep)`` a library caller passes.

:func:`choose` is nnU-Net's decision between the two on a split's summaries (``kdseg-eval
postprocess=auto``, validation split only). Numpy and cc3d only: the ONNX predict path runs
it without torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kdseg.data.roi import largest_components
from kdseg.data.tasks import ORGAN_COMPONENTS, organ_components
from kdseg.errors import InputError

#: what ``kdseg-predict`` applies (``kdseg-eval`` also takes ``auto``: :func:`choose`)
MODES = ("none", "largest")
#: the per-case mean Dice over all cases (the empty-case rule applied) that :func:`choose`
#: compares: it counts a false positive removed from a case without the class, as nnU-Net does
DECISION_METRIC = "dice_mean"


def check_postprocess(value: object, modes: tuple[str, ...] = MODES) -> str:
    """A ``postprocess=`` setting among ``modes``; anything else is a config error (exit 2)."""
    mode = "none" if value is None else str(value)
    if mode == "auto" and "auto" not in modes:
        raise InputError(
            None,
            "postprocess=auto is decided by kdseg-eval on split=val; here use none or largest "
            "(what that evaluation chose)",
        )
    if mode not in modes:
        raise InputError(None, f"postprocess must be one of {', '.join(modes)}, got {value!r}")
    return mode


def check_for_protocol(protocol: str, modes: str | tuple[str, ...] | list[str]) -> None:
    """Refuse any postprocessing under ``protocol=paper`` (one message wherever it is checked:
    ``kdseg-eval`` before the model loads, :func:`~kdseg.eval.evaluate.evaluate_modes` for a
    caller of the library): EMKD's protocol scores the network's labels as they are."""
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    if protocol == "paper" and any(mode != "none" for mode in modes):
        raise InputError(None, "protocol=paper is the paper's protocol: use postprocess=none")


def components_to_keep(mode: str, roi_components: int | None, organ: object) -> int:
    """How many of the organ's largest components ``mode`` keeps (1 for ``none``): the model's
    ``preprocess.roi_components`` where set (2: a paired organ); else 2 for a ``data.organ``
    of ``kidney`` (a kits19 model saved before ``roi_components`` existed, a kidney model
    trained with ``data=nnunet data.organ=kidney``), 1 for ``liver``. Any other organ, or none
    recorded, is refused (exit 2) rather than guessed: 1 would delete one of a pair. (Note
    that ``roi_components: 1`` is stored as unset, so only the organ can say 1.)"""
    if mode == "none":
        return 1
    if roi_components is not None:
        return int(roi_components)
    count = organ_components(organ)
    if count is not None:
        return count
    known = ", ".join(f"{k} {v}" for k, v in ORGAN_COMPONENTS.items())
    raise InputError(
        None,
        f"postprocess={mode} keeps the organ's N largest components, and this model records "
        f"neither preprocess.roi_components nor an organ kdseg knows (data.organ={organ!r}; "
        f"{known}): use postprocess=none, or train it with preprocess.roi_components set "
        "(2 for a paired organ)",
    )


def check_for_task(mode: str, task: Any) -> None:
    """Refuse ``largest`` for a tumor model: it predicts no organ to keep, and tumors are many."""
    if mode != "none" and task.name == "tumor":
        raise InputError(
            None,
            f"postprocess={mode} keeps the organ's largest component(s); this model's task is "
            "tumor (no organ, and tumors are many): use postprocess=none",
        )


def plan(mode: str, task: Any, roi_components: int | None, organ: object) -> tuple[str, int]:
    """``(mode, keep)`` for a loaded model: ``mode`` (already :func:`check_postprocess`'s)
    refused for a tumor model (:func:`check_for_task`), and how many components it keeps
    (:func:`components_to_keep`). One set-up for kdseg-predict, -eval and -pseudolabel, run
    once the model (a cascade: its stage 2, whose labels are written) is loaded."""
    check_for_task(mode, task)
    return mode, components_to_keep(mode, roi_components, organ)


def check_plan(postprocess: Any, task: Any) -> tuple[str, int]:
    """A caller's ``(mode, keep)`` (as :func:`plan` makes it), checked for a library path that
    takes one: a pair of a mode and a count of 1 or more, and no ``largest`` for a tumor model
    (it would keep one lesion and drop the rest)."""
    pair = tuple(postprocess) if isinstance(postprocess, (tuple, list)) else ()
    if (
        len(pair) != 2
        or isinstance(pair[1], bool)
        or not isinstance(pair[1], (int, np.integer))
        or pair[1] < 1
    ):
        raise InputError(
            None, f"postprocess must be a pair (mode, components kept >= 1), got {postprocess!r}"
        )
    mode = check_postprocess(pair[0])
    check_for_task(mode, task)
    return mode, int(pair[1])


def keep_largest(label: np.ndarray, keep: int = 1) -> tuple[np.ndarray, dict[str, int]]:
    """``label`` with every foreground voxel outside its ``keep`` largest 26-connected
    foreground components set to 0 (see the module docstring), a new array of the same
    shape, dtype and memory order; and ``{"components", "kept_components",
    "removed_voxels"}``. An empty label comes back unchanged (a copy)."""
    out = np.array(label, copy=True, order="K")
    where, kept, info = largest_components(label > 0, keep)
    if where is None or kept is None:
        return out, {"components": 0, "kept_components": 0, "removed_voxels": 0}
    window = out[where]  # a view: nothing outside the foreground's box is foreground
    drop = (window > 0) & ~kept
    removed = int(np.count_nonzero(drop))
    window[drop] = 0
    n_kept = int(info.get("kept_components", 1))
    return out, {
        "components": info["components"],
        "kept_components": n_kept,
        "removed_voxels": removed,
    }


def postprocess_labels(
    label: np.ndarray, mode: str | None, keep: int = 1
) -> tuple[np.ndarray, dict[str, Any]]:
    """``label`` after ``mode`` (``none`` or None: itself) and what was done (``{}`` for
    ``none``, else ``keep`` and :func:`keep_largest`'s counts). ``keep``: how many
    components to keep, :func:`components_to_keep`'s."""
    mode = check_postprocess(mode)
    if mode == "none":
        return label, {}
    out, info = keep_largest(label, keep)
    return out, {"mode": mode, "keep": int(keep), **info}


def note(info: Mapping[str, Any]) -> str | None:
    """The lesion report's line for what :func:`postprocess_labels` did; None when it did
    nothing to say (no postprocessing, or an empty prediction: no component)."""
    if not info or not info["components"]:
        return None
    removed = info["components"] - info["kept_components"]
    return (
        f"postprocess={info['mode']}: kept the largest organ component(s) "
        f"({info['kept_components']} of at most {info['keep']}); removed {removed} other(s), "
        f"{info['removed_voxels']} voxels"
    )


def choose(summaries: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """nnU-Net's decision between ``summaries["none"]`` and ``summaries["largest"]`` (per-class
    summaries of one split, :func:`kdseg.eval.metrics.summarize`): ``largest`` when it raises
    the mean over classes of :data:`DECISION_METRIC` and lowers no class's; else ``none``.
    Per class: both values and which is better (``same`` when equal)."""
    raw, post = summaries["none"], summaries["largest"]
    per_class = {}
    for name in raw:
        before, after = float(raw[name][DECISION_METRIC]), float(post[name][DECISION_METRIC])
        better = "largest" if after > before else "none" if after < before else "same"
        per_class[name] = {"none": before, "largest": after, "better": better}
    mean_raw = float(np.mean([c["none"] for c in per_class.values()]))
    mean_post = float(np.mean([c["largest"] for c in per_class.values()]))
    worse = any(c["better"] == "none" for c in per_class.values())
    return {
        "metric": DECISION_METRIC,
        "rule": "largest if it raises the mean over classes and lowers no class (nnU-Net's)",
        "per_class": per_class,
        "mean": {"none": mean_raw, "largest": mean_post},
        "choice": "largest" if mean_post > mean_raw and not worse else "none",
    }


def decision_line(decision: Mapping[str, Any], split: str, n_cases: int) -> str:
    """One line: mean Dice without and with ``largest``, per class, and the choice."""
    mean = decision["mean"]
    classes = ", ".join(
        f"{name} {c['none']:.4f} -> {c['largest']:.4f}" for name, c in decision["per_class"].items()
    )
    return (
        f"postprocess=auto on {split} ({n_cases} case(s)): mean Dice none {mean['none']:.4f}, "
        f"largest {mean['largest']:.4f} ({mean['largest'] - mean['none']:+.4f}; {classes}): "
        f"use postprocess={decision['choice']}"
    )
