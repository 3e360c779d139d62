"""A disk cache of a frozen teacher's outputs, shared by every run that sees the same batches.

Why: a live teacher's forward pass is half of an EMKD step on a CPU (RA-UNet w0.5 -> ENet w0.25
at 144 x 144: 0.134 s of 0.267 s, profiled), and a study distils one frozen teacher into many
students that see the same batches. Under kdseg's seeding every run of seed ``s`` sees the
same batches whatever the method (the pairing of a seed), so the teacher's outputs on seed
``s``'s batches are the same tensors in every method's run: computing them once is enough.

``teacher.cache: DIR`` in ``kdseg-distill`` (beyond the paper; an engineering option, off by
default) looks each batch's teacher output up in ``DIR`` before running the teacher, and
stores what it computed. The key is content, not position: a SHA-256 over the input batch's
bytes, shape, dtype and strides, the teacher's weights (:func:`~kdseg.lit.train.weights_checksum`),
how the teacher runs (memory format, compile), the torch and kdseg versions, the source of the
networks (``kdseg/models``: a fixed version string does not change when a network's forward pass
does), the device type,
the number of CPU threads and, on a CPU, the instruction set torch dispatches to
(``torch.backends.cpu.get_cpu_capability()``: AVX2 and AVX-512 kernels may differ in the last
bit). A cached output is therefore the exact tensor the live teacher would
give (same values, dtype and strides, bit for bit): a run with the cache is the run without
it, only faster, and a batch the cache has not seen (another seed, an augmentation drawn
differently) is simply computed. With ``distill.mix`` the teacher sees the mixed batch alone,
so that is what is stored: one entry a step, as without the mix, shared by the runs of one
seed with the same mix (its stream is seeded from the run's seed, whatever the method) and
never read by a run without it (a sweep of both kinds at one seed stores both). Caching the
clean batch's outputs and mixing them instead would not be bit-exact (nor the same method):
the teacher's output on a mixed image is not the mix of its outputs, its receptive field
crosses the box's border. Each tensor is its own file, written to a
temporary and renamed, so runs that share the folder at the same time never read a
half-written entry, a killed run leaves none behind, and a method that needs only the logits
shares them with one that also needs feature taps.

Cost: one file per tensor and batch. A tensor is stored with its strides and its whole storage
(RA-UNet's outputs are views of maps padded to a multiple of 32: 144 x 144 logits in 160 x 160
storage), so that what is read back is laid out as computed. In study v4 (batch 8, logits and
the ``low`` and ``high`` taps) that is 9.8 MB a step, 10 GB for a seed's 1,024 steps. When the
disk fills up, the cache stops writing (one warning) and the run goes on. Delete the folder
when the runs that share it are done. Precedent: TextBrewer's cached teacher logits
(``is_caching_logits``, in memory) and its pre-computed teacher outputs; kdseg's cache is on
disk, keyed by content and shared between processes.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from kdseg import __version__
from kdseg.errors import InputError, atomic_path
from kdseg.lit.train import weights_checksum
from kdseg.models import SegOutput

log = logging.getLogger(__name__)

#: the logits' file name inside an entry (taps use their own names)
LOGITS_FILE = "logits"


def check_cache_dir(value: object, key: str = "teacher.cache") -> Path | None:
    """A cache folder setting: a path, or null (off); an existing non-folder is refused."""
    if value is None or value is False:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise InputError(None, f"{key} must be a folder path or null, got {value!r}")
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(path, f"{key} is not a folder")
    return path


@functools.cache
def models_source_digest() -> str:
    """SHA-256 (16 hex digits) of the networks' source, ``kdseg/models/*.py``: an edit that
    changes what a teacher computes (a layer, a tap) changes the cache key, though kdseg's
    version string stays the same between releases."""
    import kdseg.models

    digest = hashlib.sha256()
    for path in sorted(Path(kdseg.models.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


class TeacherCache:
    """Teacher outputs on disk under ``root``, keyed by the batch's bytes and the teacher.

    ``taps``: the feature taps the distillation terms read (the logits are always kept: the
    teacher's argmax labels unlabeled images). ``hits`` and ``misses`` count batches.
    """

    def __init__(
        self, root: str | os.PathLike, teacher: nn.Module, taps: Iterable[str], setting: str
    ) -> None:
        self.root = Path(root)
        self.taps = sorted(set(taps))
        self.teacher = teacher
        self.hits = 0
        self.misses = 0
        self.writable = True
        # ``setting``: how the teacher runs (memory format, compile), which may change bits
        self.setting = setting
        self._identity_bytes: bytes | None = None

    @property
    def _identity(self) -> bytes:
        """The teacher's part of every key, computed at the first key, not when the cache is
        built: a resumed distillation run's checkpoint holds the teacher it started with, and
        Lightning loads it into the module after the module (and this cache) was built from
        the ``teacher.ckpt`` file, which may have changed since (a teacher still training
        rewrites its ``best.ckpt``). Keyed at build time, that run stored the old teacher's
        outputs under the new teacher's weights and read the new teacher's entries. Keys are
        only computed once the Trainer has restored the checkpoint (training steps)."""
        if self._identity_bytes is None:
            self._identity_bytes = (
                f"kdseg-teacher-cache-v1|{weights_checksum(self.teacher)}|{self.setting}|"
                f"torch {torch.__version__}|kdseg {__version__}|models {models_source_digest()}|"
                "threads "
            ).encode()
        return self._identity_bytes

    def key(self, images: torch.Tensor) -> str:
        """SHA-256 hex digest of the teacher identity and the batch (bytes, shape, dtype,
        strides, device type), and of what changes the teacher's arithmetic on that device:
        autocast and its dtype when it is on (a mixed-precision run never reads a full-precision
        run's entries), on a CPU the instruction set torch dispatches to (a cache folder shared
        by an AVX2 and an AVX-512 machine never mixes their outputs), and on CUDA the card,
        cuDNN and TF32 settings. (Since 2026-12-08 the key also names the kdseg version and the
        CPU capability: entries written before are not read again.) The thread count is read at
        each call, not when the cache is built: Lightning's DDP launchers set it after the
        module is built (``OMP_NUM_THREADS`` unset: the CPUs over the processes), and a key
        must name the threads the teacher computes with (the same bytes as before where it did
        not change)."""
        digest = hashlib.sha256(self._identity + str(torch.get_num_threads()).encode())
        device = images.device.type
        digest.update(f"|{device}|{images.dtype}|{tuple(images.shape)}|{images.stride()}|".encode())
        if device == "cpu":
            digest.update(f"cpu {torch.backends.cpu.get_cpu_capability()}|".encode())
        if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
            digest.update(f"autocast {torch.get_autocast_dtype(device)}|".encode())
        if device == "cuda":
            backends = torch.backends
            card = torch.cuda.get_device_name(images.device)
            tf32 = (backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32)
            digest.update(f"{card}|cudnn {backends.cudnn.version()}|tf32 {tf32}|".encode())
        # the buffer's bytes, not a copy; as bytes, so that bfloat16 (which numpy lacks) hashes
        digest.update(images.detach().cpu().contiguous().view(torch.uint8).numpy())
        return digest.hexdigest()

    def _files(self, key: str) -> dict[str, Path]:
        entry = self.root / key[:2] / key
        return {name: entry / f"{name}.pt" for name in [LOGITS_FILE, *self.taps]}

    def __call__(self, images: torch.Tensor) -> SegOutput:
        """The teacher's output on ``images``: read from the cache, or computed and stored."""
        files = self._files(self.key(images))
        loaded = self._load(files, images.device)
        if loaded is not None:
            self.hits += 1
            return loaded
        self.misses += 1
        with torch.no_grad():
            out = self.teacher(images)
        if self.writable:
            self._store(files, out)
        return out

    def _store(self, files: dict[str, Path], out: SegOutput) -> None:
        """Write an entry's tensors (each to a temporary, then renamed). A full disk or a
        read-only folder stops the writing, with one warning, not the run: the cache is a
        speed-up, and the outputs it would hold are computed anyway."""
        try:
            for name, path in files.items():
                tensor = out.logits if name == LOGITS_FILE else out.taps[name]
                with atomic_path(path) as tmp:
                    torch.save(tensor.detach().cpu(), tmp)
        except OSError as err:
            self.writable = False
            log.warning(
                "teacher cache %s: cannot write (%s); going on without storing", self.root, err
            )

    def _load(self, files: dict[str, Path], device: torch.device) -> SegOutput | None:
        """The entry's tensors, or None when one is missing or unreadable (then recomputed and
        written again)."""
        if not all(path.is_file() for path in files.values()):
            return None
        tensors = {}
        for name, path in files.items():
            try:
                tensors[name] = torch.load(path, map_location=device, weights_only=True)
            except Exception:  # a damaged file (disk full, copied half): recompute it
                return None
            if not isinstance(tensors[name], torch.Tensor):
                return None
        logits = tensors.pop(LOGITS_FILE)
        return SegOutput(logits, tensors)
