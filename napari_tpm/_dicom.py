"""Finding and reading the DICOM series of a folder (SimpleITK's GDCM series reader).

Kept out of `napari_tpm.io` to keep that module short; `napari_tpm.io.read_volume` and
`read_header` use it for folders, and `napari_tpm.io` re-exports `dicom_series`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import SimpleITK as sitk

from napari_tpm._io_checks import VolumeError, _itk_detail


def dicom_series(folder: str | Path) -> dict[str, tuple[str, ...]]:
    """The DICOM series of a folder: SeriesInstanceUID -> its files in slice order.

    Raises:
        VolumeError: an empty folder, or one without any DICOM series.
    """
    folder = Path(folder)
    if not any(p.is_file() for p in folder.iterdir()):
        raise VolumeError(
            f"{folder}: the folder is empty (no files directly inside); expected one DICOM series"
        )
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise VolumeError(f"{folder}: no DICOM series found in this folder")
    return {
        sid: tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid))
        for sid in series_ids
    }


def describe_series(found: dict[str, tuple[str, ...]]) -> str:
    """ "UID (N files), ..." for messages that ask the user to choose a series."""
    return ", ".join(f"{sid or '?'} ({len(f)} files)" for sid, f in found.items())


def _read_dicom_folder(folder: Path, series: str | None = None) -> sitk.Image:
    files_by_series = dicom_series(folder)
    series_ids = list(files_by_series)
    if series is not None and series not in files_by_series:
        raise VolumeError(
            f"{folder}: no DICOM series {series!r} here; the folder holds "
            f"{describe_series(files_by_series)}"
        )
    chosen = series or max(series_ids, key=lambda sid: len(files_by_series[sid]))
    files = files_by_series[chosen]
    if len(series_ids) > 1 and series is None:
        counts = describe_series(files_by_series)
        warnings.warn(
            f"{folder}: {len(series_ids)} DICOM series found ({counts}); reading {chosen or '?'}, "
            "the one with the most files",
            stacklevel=3,
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(files))
    try:
        return reader.Execute()
    except RuntimeError as err:
        raise VolumeError(
            f"{folder}: cannot read the DICOM series, a file is unreadable or corrupt "
            f"({_itk_detail(err)})"
        ) from None
