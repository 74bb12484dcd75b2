"""Byte-level NIfTI checks that ITK does not make: the header's promised size, hidden NaNs.

ITK reads a truncated NIfTI without complaint (padding with zeros) and its NIfTI library turns
NaN and infinite floats into 0, so `napari_tpm._nifti_check` checks files against their header
with these helpers, when `napari_tpm.io` reads and after it writes (a full disk truncates
what ITK writes).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class NiftiLayout:
    total_bytes: int  # header + extensions + voxel data
    vox_offset: int
    float_dtype: np.dtype | None  # float32/float64 voxels, whose NaNs ITK would hide


def nifti_layout(header: bytes) -> NiftiLayout | None:
    """Byte layout from a NIfTI-1 or NIfTI-2 header, or None if it is not one."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", header[70:74])
            vox_offset = int(struct.unpack(endian + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            datatype, bitpix = struct.unpack(endian + "2h", header[12:16])
            dims = struct.unpack(endian + "8q", header[16:80])
            vox_offset = struct.unpack(endian + "q", header[168:176])[0]
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0:
        return None
    n_voxels = math.prod(max(int(d), 1) for d in dims[1 : ndim + 1])
    floats = {16: "f4", 64: "f8"}  # NIfTI datatype codes for float32 and float64
    dtype = np.dtype(endian + floats[datatype]) if datatype in floats else None
    return NiftiLayout(int(vox_offset) + n_voxels * bitpix // 8, int(vox_offset), dtype)


def scan_payload(path: Path, gz: bool, layout: NiftiLayout) -> tuple[int | None, int, int]:
    """(bytes in the file, NaN count, inf count); bytes is None when the stream is broken."""
    total = n_nan = n_inf = 0
    dtype = layout.float_dtype
    pending = b""
    try:
        with gzip.open(path, "rb") if gz else path.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                start = total
                total += len(chunk)
                if dtype is None:
                    continue
                lo = max(layout.vox_offset - start, 0)
                hi = min(layout.total_bytes - start, len(chunk))
                if hi <= lo:
                    continue
                data = pending + chunk[lo:hi]
                usable = len(data) - len(data) % dtype.itemsize
                values = np.frombuffer(data[:usable], dtype=dtype)
                pending = data[usable:]
                n_nan += int(np.count_nonzero(np.isnan(values)))
                n_inf += int(np.count_nonzero(np.isinf(values)))
    except (OSError, EOFError, zlib.error):
        return None, n_nan, n_inf
    return total, n_nan, n_inf
