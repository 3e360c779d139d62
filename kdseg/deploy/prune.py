"""Structured channel pruning with torch-pruning, then a short recovery fine-tuning run.

Whole channels are removed (the network gets narrower, so every backend gets faster, unlike
unstructured sparsity), ``ratio`` of them in every prunable group, chosen by weight magnitude
(``MagnitudePruner``) or by the norm of the whole coupled group (``GroupNormPruner``). The
classifier stays intact: the layers that produce the logits are found by running the network
(the last convolution executed, and any convolution with ``num_classes`` outputs).

torch-pruning propagates a channel choice through residual additions and concatenations, but
not through everything: ENet zero-pads channels on its shortcut path and couples encoder and
decoder through max-pool indices, which its dependency graph cannot see. :func:`unsafe_layers`
therefore tries every group on a throwaway copy (one channel, one forward pass) and leaves
out the groups that break the network, so any registered model prunes without special cases.

Recovery reuses the training stack (``SegmentationModule`` and ``fit``) with the pruned network
swapped in; the best recovery checkpoint's weights are loaded back into the pruned network.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdseg.data.dataset import DataSetup
from kdseg.errors import InputError
from kdseg.eval.checkpoint import NET_PREFIX
from kdseg.models import LogitsOnly
from kdseg.models.cost import count_params

log = logging.getLogger(__name__)
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
METHODS = ("magnitude", "group_norm")


@dataclass
class PruneReport:
    """Parameter counts before and after, and which layers were protected."""

    ratio: float
    method: str
    params_before: int
    params_after: int
    classifier: list[str]
    skipped_unsafe: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"pruned {self.ratio:.0%} of channels ({self.method}): {self.params_before:,} -> "
            f"{self.params_after:,} parameters ({self.params_after / self.params_before:.1%})"
        )


def classifier_layers(net: nn.Module, example: torch.Tensor, num_classes: int) -> list[nn.Module]:
    """The layers making the logits: the last one executed and any with ``num_classes`` outputs."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
        for m in net.modules()
        if isinstance(m, CONV_TYPES)
    ]
    try:
        with torch.no_grad():
            net(example)
    finally:
        for h in hooks:
            h.remove()
    outs = {
        m
        for m in order
        if getattr(m, "out_channels", getattr(m, "out_features", None)) == num_classes
    }
    return list(dict.fromkeys([order[-1], *[m for m in order if m in outs]]))


def _group_runs(net: nn.Module, example: torch.Tensor, group: Any, expected: torch.Size) -> bool:
    """Whether removing the group's first channel leaves ``net`` runnable (``net`` is restored).

    The pruning functions replace parameters and size attributes of the modules they touch;
    saving and putting back those modules' attribute dicts undoes them exactly, far cheaper
    than a deep copy of the network per group.
    """
    owned = {id(m) for m in net.modules()}
    touched = {
        id(dep.target.module): dep.target.module
        for dep, _ in group
        if id(dep.target.module) in owned
    }  # graph-only pseudo-ops hold no weights
    saved = {}
    for key, module in touched.items():
        state = dict(module.__dict__)
        state["_parameters"], state["_buffers"] = dict(module._parameters), dict(module._buffers)
        saved[key] = state
    try:
        for dep, idxs in group:
            if id(dep.target.module) in touched:
                dep.handler(dep.target.module, [int(getattr(i, "idx", i)) for i in idxs])
        with torch.no_grad():
            return net(example).shape == expected
    except Exception:  # any failure of the trial network means: do not prune this group
        return False
    finally:
        for key, state in saved.items():
            touched[key].__dict__.clear()
            touched[key].__dict__.update(state)


def unsafe_layers(
    net: nn.Module, example: torch.Tensor, ignored: list[nn.Module]
) -> list[nn.Module]:
    """Root layers of the pruning groups that break ``net`` when pruned (see module docstring)."""
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(net, example_inputs=example)
    with torch.no_grad():
        expected = net(example).shape
    unsafe = []
    for group in graph.get_all_groups(ignored_layers=list(ignored), root_module_types=CONV_TYPES):
        root = group[0].dep.target.module
        single = graph.get_pruning_group(root, group[0].dep.handler, [0])
        if not _group_runs(net, example, single, expected):
            unsafe.append(root)
    return unsafe


def prune_channels(
    model: nn.Module,
    ratio: float,
    example: torch.Tensor,
    num_classes: int,
    method: str = "magnitude",
) -> tuple[nn.Module, PruneReport]:
    """Remove ``ratio`` of the channels of every prunable group of a copy of ``model``.

    Returns the pruned network (same class, narrower layers, same output shape) and a report
    with the real parameter counts.
    """
    import torch_pruning as tp

    if not 0.0 < ratio < 1.0:
        raise InputError(None, f"prune ratio must be in (0, 1), got {ratio}")
    if method not in METHODS:
        raise InputError(None, f"unknown pruning method {method!r}; use {' or '.join(METHODS)}")
    pruned = copy.deepcopy(model).eval()
    net = LogitsOnly(pruned)
    names = {m: n for n, m in pruned.named_modules()}
    head = classifier_layers(net, example, num_classes)
    unsafe = unsafe_layers(net, example, head)
    before = count_params(pruned)
    kwargs = dict(
        example_inputs=example,
        pruning_ratio=ratio,
        ignored_layers=head + unsafe,
        root_module_types=list(CONV_TYPES),
    )
    if method == "magnitude":
        pruner = tp.pruner.MagnitudePruner(
            net, importance=tp.importance.MagnitudeImportance(p=2), **kwargs
        )
    else:
        pruner = tp.pruner.GroupNormPruner(
            net, importance=tp.importance.GroupMagnitudeImportance(p=2), **kwargs
        )
    pruner.step()
    with torch.no_grad():
        out = net(example)
    if out.shape[1] != num_classes:
        raise RuntimeError(f"pruning changed the classifier: {out.shape[1]} outputs")
    report = PruneReport(
        ratio,
        method,
        before,
        count_params(pruned),
        [names.get(m, "?") for m in head],
        [names.get(m, "?") for m in unsafe],
    )
    return pruned, report


def finetune(
    pruned: nn.Module,
    model_config: dict[str, Any],
    setup: DataSetup,
    run_cfg: dict[str, Any],
    out_dir: str | Path,
    run_dirs: list[Path] | None = None,
) -> dict[str, Any]:
    """Recovery training of ``pruned`` in place with the project's own training loop.

    ``run_cfg`` is a training config (``trainer``, ``optim``, ``loss``, ``seed``, ...), usually
    the original run's with a short schedule. The best checkpoint by validation Dice is loaded
    back into ``pruned``. Returns ``fit``'s summary.

    The run folder (``out_dir/prune-finetune-XXXX``) is removed again when the fine-tune fails
    or is stopped (an exception, SIGTERM's ``Terminated`` and Ctrl-C included): no checkpoints
    of an unfinished recovery are left. ``run_dirs``, when given, gets the folder appended as
    soon as it exists, so that the caller can remove it too if a later step fails (a failed
    export check: ``kdseg-export`` keeps it only beside a written artefact, which records it).
    """
    from kdseg.deploy.artifact import RUN_OPTIONS
    from kdseg.lit.segment import SegmentationModule
    from kdseg.lit.train import fit

    # the pruned network runs eager and contiguous: how the original trained is not carried over
    # and its encoder_weights file is not read: the pruned weights replace the module's at once
    model = {k: v for k, v in model_config.items() if k not in (*RUN_OPTIONS, "encoder_weights")}
    module = SegmentationModule(
        model=model, data=setup.info(), optim=run_cfg["optim"], loss=run_cfg.get("loss", {})
    )
    module.net = pruned.train()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="prune-finetune-", dir=out_dir))
    if run_dirs is not None:
        run_dirs.append(run_dir)
    try:
        data = setup.datamodule(seed=int(run_cfg.get("seed", 123)))
        summary = fit(module, data, run_cfg, run_dir)
        best = summary.get("best_checkpoint")
        if best and Path(best).is_file():
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            pruned.load_state_dict(
                {k[len(NET_PREFIX) :]: v for k, v in state.items() if k.startswith(NET_PREFIX)}
            )
    except BaseException:  # Terminated (SIGTERM) and KeyboardInterrupt too
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    pruned.eval()
    return summary
