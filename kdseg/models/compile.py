"""``torch.compile`` for a network that trains or teaches: a speed option, not part of any model.

``compile: true`` in a model config (``model.compile`` in ``kdseg-train``, ``student.compile`` in
``kdseg-distill``) compiles the trained network's forward pass with TorchInductor (its backward
follows); ``teacher.compile: true`` compiles a live teacher's frozen forward pass. The weights,
their checksum and the checkpoint keys are unchanged (``nn.Module.compile`` compiles in place),
so a compiled run's checkpoint loads, evaluates and exports like any other. Evaluation,
prediction and export never compile: they rebuild the network from its config, where the key is
read and ignored (inference sees many volume shapes, each a new compilation).

Measured on this project's 2-core CPU (torch 2.13, one thread, batch 8 at 144 x 144;
``scripts/bench_speed_options.py --option compile``, docs/training.md "Speed options"): a
training step of RA-UNet w0.5, ENet w0.25 and UNet++ w0.5 takes 0.80-0.84x the eager time, a
frozen teacher's forward pass 0.69-0.94x (ENet 1.08x); whole distillations from a compiled
RA-UNet teacher, two at a time as the studies run, took about 0.9x the time a step. The first
step of each new shape or mode pays the compilation (12-83 s cold); Inductor's on-disk cache
(``TORCHINDUCTOR_CACHE_DIR``, by default under the system temp folder) makes later runs of the
same shapes start in seconds. Off by default: the generated kernels sum in another order, so a
compiled run is not bit-identical to an eager one (same seed, same run still holds within each
setting, checked by the tests).

Beyond the paper (an engineering option). Needs a C++ compiler on the training machine.
"""

from __future__ import annotations

import logging
import os
import shutil

from torch import nn

from kdseg.errors import InputError

#: loggers that report compilation details at WARNING (graph breaks, recompilations); a normal
#: run prints no library noise, so they are raised to ERROR when a network is compiled, except
#: Dynamo's one line that a recompile limit sent a network back to eager (a silent slowdown)
_NOISY = ("torch._dynamo", "torch._inductor", "torch.fx.experimental.symbolic_shapes")
_LIMITS = "torch._dynamo.convert_frame"  # where Dynamo says it hit a recompile limit


class _OnlyLimits(logging.Filter):
    """Pass a record of :data:`_LIMITS` only when it says a recompile limit was hit (or is an
    error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "limit" in record.getMessage()


def check_compile(value: object, key: str) -> bool:
    """A ``compile`` setting: true, or false / null (off); anything else is a config error
    (:class:`~kdseg.errors.InputError`, exit code 2)."""
    if value is not None and not isinstance(value, bool):
        raise InputError(None, f"{key} must be true, false or null, got {value!r}")
    return bool(value)


def compile_network(net: nn.Module) -> nn.Module:
    """Compile ``net``'s forward pass in place with TorchInductor; returns ``net``.

    Idempotent. The state dict keeps its keys (no ``_orig_mod.`` prefix), and train / eval mode
    switches recompile once each (Dynamo guards on them). Without a C++ compiler (``$CXX`` or
    ``g++``) it is a config error here, not a traceback at the first step.
    """
    cxx = os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None:
        raise InputError(None, f"compile: true needs a C++ compiler and {cxx!r} is not on PATH")
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.ERROR)
    limits = logging.getLogger(_LIMITS)
    limits.setLevel(logging.WARNING)
    if not any(isinstance(f, _OnlyLimits) for f in limits.filters):
        limits.addFilter(_OnlyLimits())
    if not is_compiled(net):
        net.compile()
    return net


def is_compiled(net: nn.Module) -> bool:
    """Whether :func:`compile_network` (``nn.Module.compile``) was applied to ``net``."""
    return getattr(net, "_compiled_call_impl", None) is not None
