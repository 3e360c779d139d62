"""kdseg.data: readers, preprocessing, slice caches and the phantom generator.

Importing this package first imports nibabel *without* pydicom. nibabel's ``nifti1`` imports
pydicom at import time when it is installed (0.2-0.25 s, a tenth of a fresh ``kdseg-predict``)
only to parse the rare DICOM header extension (NIfTI extension code 2) of a ``.nii`` file.
With pydicom hidden during that one import, nibabel keeps such an extension as raw bytes
(``Nifti1Extension``), which kdseg never reads and writes back unchanged; pydicom itself stays
importable, and kdseg's DICOM readers import it when they run.
"""

import sys


def _import_nibabel_without_pydicom() -> None:
    if "nibabel" in sys.modules or "pydicom" in sys.modules:
        return
    sys.modules["pydicom"] = None  # type: ignore[assignment]  # `import pydicom` -> ImportError
    try:
        import nibabel  # noqa: F401
    finally:
        if sys.modules.get("pydicom", 0) is None:
            del sys.modules["pydicom"]


_import_nibabel_without_pydicom()
