"""The NIfTI check `napari_tpm.io` makes before ITK reads a file, and again after writing one.

ITK pads a truncated NIfTI with zeros and its NIfTI library turns NaN and infinite floats into
0, so a damaged download or a write cut short by a full disk would pass unnoticed. The byte-level
helpers live in `napari_tpm._nifti`; this module turns their verdict into a `VolumeError`. Kept
apart from `napari_tpm.io` so that reading and writing (`napari_tpm._io_write`) share it without
importing each other.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

from napari_tpm._io_checks import VolumeError, _nonfinite_message
from napari_tpm._nifti import nifti_layout, scan_payload


def _check_nifti(path: Path, check_values: bool = True) -> None:
    """Raise VolumeError for a truncated NIfTI file, or one whose float voxels hold NaN/inf.

    ITK reads a truncated NIfTI (plain or gzipped) without complaint and pads with zeros, which
    would silently turn a damaged download into a half-empty scan; and the NIfTI library it uses
    replaces NaN and infinite floats with 0, hiding them from `check_finite`. The header gives
    the exact byte count and voxel type. Float volumes are streamed once to count non-finite
    values (and bytes); for other types a gzip file's trailer size field is checked first, and
    only on a mismatch (truncation, or a rare multi-member file) is the stream decompressed.
    """
    gz = path.name.lower().endswith(".gz")
    try:
        with gzip.open(path, "rb") if gz else path.open("rb") as fh:
            header = fh.read(540)
    except (OSError, EOFError, zlib.error) as err:
        raise VolumeError(
            f"{path.name}: cannot read the file, it is unreadable or corrupt ({err})"
        ) from None
    layout = nifti_layout(header)
    if layout is None:
        return  # not a NIfTI header we understand: let ITK give its own verdict
    n_nan = n_inf = 0
    if layout.float_dtype is not None:
        actual, n_nan, n_inf = scan_payload(path, gz, layout)
    elif gz:
        with path.open("rb") as fh:
            fh.seek(-4, 2)
            isize = struct.unpack("<I", fh.read(4))[0]
        if isize == layout.total_bytes % 2**32:
            return
        actual = scan_payload(path, gz, layout)[0]
    else:
        actual = path.stat().st_size
    if actual is None or actual < layout.total_bytes:
        got = "a broken compressed stream" if actual is None else f"{actual:,} bytes"
        raise VolumeError(
            f"{path.name}: the file is truncated or corrupt (header promises "
            f"{layout.total_bytes:,} bytes, found {got})"
        )
    if check_values and (n_nan or n_inf):
        raise VolumeError(_nonfinite_message(path.name, n_nan, n_inf))
