"""Intensity normalisation and the in-plane working grid of the encoder.

Intensity: TPM and ADNet z-score each volume over all its voxels, background included
(tpm-method.md §1 "Input"), after a modality-specific clip (§2). We do the same, at volume level,
so a slice's features never depend on which other slices happen to share its batch.

Geometry: the encoder sees square slices of a fixed size (256 in the paper). `WorkingGrid`
resizes each native (H, W) slice so that its longer *physical* side fills the square, keeping the
physical aspect ratio (anisotropic pixels become square), pads the rest, and maps score maps back
onto the native slice exactly, whatever the resolution of the maps (the encoder's output is 1/8 of
the working size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "CT_ROBUST",
    "CT_WINDOW",
    "MR_PERCENTILES",
    "MR_ROBUST",
    "WorkingGrid",
    "check_intensity_range",
    "from_working_grid",
    "guess_modality",
    "normalise_intensity",
    "to_working_grid",
]

#: Hounsfield window applied to CT before z-scoring. It is the abdominal soft-tissue window of
#: the paper's ABD-CT pipeline (tpm-method.md §2.2: window to [-125, 275], then the per-volume
#: z-score at load time, which cancels the paper's min-max rescale). Keeping it means weights
#: trained in the paper's setting see the intensity distribution they were trained on, and it
#: spends the dynamic range on the organs: fat (-100) to contrast-enhanced kidney (~200), while air
#: and bone saturate, so they cannot dominate the volume's mean and standard deviation.
CT_WINDOW: tuple[float, float] = (-125.0, 275.0)

#: Percentiles MR is clipped to before z-scoring. The paper's MR pipeline cuts the top 0.5 % of
#: the histogram (tpm-method.md §2.1) to tame bright fluid, fat and coil-proximity hot spots; the
#: matching bottom cut removes rare negative or dark reconstruction artefacts.
MR_PERCENTILES: tuple[float, float] = (0.5, 99.5)

#: Robust CT map: HU -> (HU - centre) / scale. The centre and scale are the mean and standard
#: deviation of windowed abdominal CT (the median over the tuning volumes of the development
#: data), so features tuned on z-scored CT keep their meaning while every scan shares one map.
CT_ROBUST: tuple[float, float] = (-55.0, 95.0)

#: Robust MR map: x -> x / median(body) * gain + shift. With these numbers the body's median
#: reads 1.5 and the empty field around it -0.5, about where the per-volume z-score put them on
#: the tuning volumes of the development data.
MR_ROBUST: tuple[float, float] = (1.5, -0.5)

#: Above this many voxels, statistics that need sorting are taken on a regular subsample.
_MAX_STAT_VOXELS = 2_000_000

Modality = Literal["auto", "ct", "mr"]
Normalisation = Literal["zscore", "robust"]


def _subsample(array: np.ndarray) -> np.ndarray:
    """A deterministic regular subsample of at most ~_MAX_STAT_VOXELS voxels (a view, no copy)."""
    flat = array.reshape(-1)
    step = max(1, flat.size // _MAX_STAT_VOXELS)
    return flat[::step]


def guess_modality(array: np.ndarray) -> Literal["ct", "mr"]:
    """Guess whether `array` holds CT (Hounsfield units) or MR (arbitrary units).

    CT is recognised by its air: at least 5 % of the voxels at or below -500 HU (air around the
    body, lungs, bowel gas), or a minimum at or below -900 together with a maximum at or above
    300 (air and bone in the same volume, as in a tight body crop). MR intensities are
    non-negative or, once rescaled, span a few units, so neither test fires. CT stored already
    windowed (the few-shot literature's ABD-CT: HU clipped to [-125, 275]) has no air below -500
    but a pile of voxels at exactly its negative minimum: a minimum at or below -100 HU shared by
    at least 5 % of the voxels also means CT. A CT cropped so tightly that it holds no air and no
    bone is guessed MR; pass the modality explicitly then.
    """
    sample = _subsample(np.asarray(array))
    if sample.size == 0:
        return "mr"
    lo, hi = float(np.min(sample)), float(np.max(sample))
    air_fraction = float(np.count_nonzero(sample <= -500)) / sample.size
    if air_fraction >= 0.05 or (lo <= -900 and hi >= 300):
        return "ct"
    if lo <= -100 and np.count_nonzero(sample == lo) >= 0.05 * sample.size:
        return "ct"  # HU already clipped to a window: air and fat sit at its lower bound
    return "mr"


def check_intensity_range(image: np.ndarray, what: str = "the image") -> None:
    """Refuse a constant image, and values too large for the normalisation (ValueError).

    A constant image carries no information, yet a prototype model would still label part of
    it; values beyond a quarter of the float32 range overflow the statistics (MR percentiles
    and z-scores turn into NaN, then an empty result).
    """
    if image.size == 0:
        return
    lo, hi = float(np.min(image)), float(np.max(image))
    if lo == hi:
        raise ValueError(f"{what} is constant (every voxel is {lo:g}); there is nothing to segment")
    limit = float(np.finfo(np.float32).max)
    if max(abs(lo), abs(hi)) > limit / 4:
        raise ValueError(
            f"{what} holds values from {lo:.3g} to {hi:.3g}, too large for the intensity "
            "normalisation; rescale the image first"
        )


def normalise_intensity(
    array: np.ndarray,
    modality: Modality = "auto",
    *,
    method: Normalisation = "zscore",
    ct_window: Sequence[float] = CT_WINDOW,
    mr_percentiles: Sequence[float] = MR_PERCENTILES,
) -> np.ndarray:
    """Clip by modality, then scale; returns a new float32 array.

    "ct" clips to `ct_window` (HU); "mr" clips to the `mr_percentiles` of the volume; "auto"
    picks one with `guess_modality`. Then, by `method`:

    - "zscore": the z-score over every voxel, background included, as the paper does (what the
      trained checkpoints expect). The mean and spread then depend on the field of view and on
      how much air the scan holds, so the same tissue gets other values in another scan.
    - "robust": values that mean the same in every scan. CT keeps the Hounsfield scale through
      one fixed map (:data:`CT_ROBUST`), so a CT stored already windowed and an unclipped one
      come out identical. MR divides by the median of the body (voxels above a tenth of the
      bright end), which does not move with the field of view or the coil gain (:data:`MR_ROBUST`).

    A constant volume (zero spread after clipping) becomes all zeros rather than NaN.

    Raises:
        ValueError: unknown modality or method, or NaN/infinite values in `array`.
    """
    if modality not in ("auto", "ct", "mr"):
        raise ValueError(f"modality must be 'auto', 'ct' or 'mr', got {modality!r}")
    if method not in ("zscore", "robust"):
        raise ValueError(f"method must be 'zscore' or 'robust', got {method!r}")
    arr = np.asarray(array)
    if arr.size == 0:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError("the image contains NaN or infinite values; replace them first")
    if modality == "auto":
        modality = guess_modality(arr)
    if modality == "ct":
        lo, hi = float(ct_window[0]), float(ct_window[1])
    else:
        lo, hi = (float(v) for v in np.percentile(_subsample(arr), mr_percentiles))
    out = arr.astype(np.float32, copy=True)
    np.clip(out, lo, hi, out=out)
    if method == "robust":
        centre, scale = CT_ROBUST if modality == "ct" else _mr_reference(out, hi)
    else:
        centre = float(out.mean(dtype=np.float64))
        scale = float(out.std(dtype=np.float64))
    out -= np.float32(centre)
    if scale > 1e-6 * max(1.0, abs(centre), hi - lo):
        out /= np.float32(scale)
    else:
        out[...] = 0.0
    return out


def _mr_reference(clipped: np.ndarray, bright: float) -> tuple[float, float]:
    """(centre, scale) for robust MR: ``x / median(body) * MR_ROBUST[0] + MR_ROBUST[1]``.

    The body is every voxel above a tenth of the clipped bright end: air and the dark field
    around the patient sit near zero in MR, every tissue well above it.
    """
    sample = _subsample(clipped)
    body = sample[sample > 0.1 * bright]
    ref = float(np.median(body)) if body.size else 0.0
    gain, shift = MR_ROBUST
    if ref <= 0:
        return 0.0, 0.0
    # x * gain / ref + shift == (x - centre) / scale
    scale = ref / gain
    return -shift * scale, scale


@dataclass(frozen=True)
class WorkingGrid:
    """How native (H, W) slices map onto the encoder's square (size, size) working grid.

    The slice content occupies `content_hw` working pixels starting at `offset` (top, left); the
    rest is padding. Coordinates follow the `align_corners=False` convention throughout: a pixel
    is a unit square, so native pixel edge 0 maps to working coordinate `offset` and native edge
    H to `offset + content_h`, and a map of any resolution r covers the same square as the
    working grid with r/size working pixels per map pixel.
    """

    shape_hw: tuple[int, int]
    spacing_hw: tuple[float, float]
    size: int
    content_hw: tuple[int, int]
    offset: tuple[int, int]

    @classmethod
    def fit(
        cls, shape_hw: Sequence[int], spacing_hw: Sequence[float] = (1.0, 1.0), size: int = 256
    ) -> WorkingGrid:
        """Scale so the longer physical side fills `size` pixels, centre and pad the other."""
        h, w = (int(v) for v in shape_hw)
        sy, sx = (float(v) for v in spacing_hw)
        if h < 1 or w < 1 or size < 1:
            raise ValueError(f"need positive slice shape and size, got {(h, w)} and {size}")
        if sy <= 0 or sx <= 0:
            raise ValueError(f"spacing must be positive, got {(sy, sx)}")
        ph, pw = h * sy, w * sx
        longest = max(ph, pw)
        ch = max(1, min(size, round(size * ph / longest)))
        cw = max(1, min(size, round(size * pw / longest)))
        return cls(
            shape_hw=(h, w),
            spacing_hw=(sy, sx),
            size=int(size),
            content_hw=(ch, cw),
            offset=((size - ch) // 2, (size - cw) // 2),
        )

    def _check_native(self, hw: Sequence[int]) -> None:
        if tuple(int(v) for v in hw) != self.shape_hw:
            raise ValueError(f"expected slices of shape {self.shape_hw}, got {tuple(hw)}")

    def to_working(
        self, slices: torch.Tensor, pad_value: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Resize [N, C, H, W] native slices bilinearly onto [N, C, size, size], padded.

        `pad_value` should be the minimum of the whole normalised volume (what the paper pads
        with) so that every batch of the same volume is padded alike; when None, the minimum of
        `slices` is used.
        """
        import torch
        import torch.nn.functional as F

        if slices.ndim != 4:
            raise ValueError(f"expected [N, C, H, W] slices, got shape {tuple(slices.shape)}")
        self._check_native(slices.shape[-2:])
        x = slices if slices.is_floating_point() else slices.float()
        ch, cw = self.content_hw
        if (ch, cw) != self.shape_hw:
            shrinking = ch < self.shape_hw[0] or cw < self.shape_hw[1]
            x = F.interpolate(
                x, size=(ch, cw), mode="bilinear", align_corners=False, antialias=shrinking
            )
        if pad_value is None:
            pad_value = slices.min() if slices.numel() else 0.0
        pad_value = float(pad_value)
        top, left = self.offset
        if (ch, cw) == (self.size, self.size):
            return x.clone() if x is slices else x
        out = torch.full(
            (*x.shape[:2], self.size, self.size), pad_value, dtype=x.dtype, device=x.device
        )
        out[..., top : top + ch, left : left + cw] = x
        return out

    def from_working(self, maps: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """Map [N, C, h, h] maps on the working square (any resolution h) to [N, C, H, W].

        Every native pixel centre is located on the map and sampled (bilinear by default):
        this is "crop the padding, resize to the native size", done in one exact step so a crop
        box that falls between map pixels (maps at size/8) needs no rounding.
        """
        import torch
        import torch.nn.functional as F

        if maps.ndim != 4 or maps.shape[-1] != maps.shape[-2]:
            raise ValueError(f"expected square [N, C, h, h] maps, got shape {tuple(maps.shape)}")
        x = maps if maps.is_floating_point() else maps.float()
        h, w = self.shape_hw
        ch, cw = self.content_hw
        top, left = self.offset
        # native pixel centre (i + 0.5) -> working coordinate -> [-1, 1] of the square.
        ys = (top + (torch.arange(h, dtype=torch.float64) + 0.5) * (ch / h)) / self.size * 2 - 1
        xs = (left + (torch.arange(w, dtype=torch.float64) + 0.5) * (cw / w)) / self.size * 2 - 1
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [H, W, (x, y)]
        grid = grid.to(dtype=x.dtype, device=x.device).expand(x.shape[0], h, w, 2)
        return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)

    def to_working_mask(self, mask: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Nearest-neighbour [H, W] -> [size, size] (padding = 0), same type as given.

        Each working pixel takes the native pixel under its centre, so label values survive
        unchanged and no class is invented by interpolation.
        """
        is_tensor = not isinstance(mask, np.ndarray)
        arr = mask.detach().cpu().numpy() if is_tensor else np.asarray(mask)
        if arr.ndim != 2:
            raise ValueError(f"expected an [H, W] mask, got shape {arr.shape}")
        self._check_native(arr.shape)
        rows, rvalid = self._nearest_index(0)
        cols, cvalid = self._nearest_index(1)
        out = np.zeros((self.size, self.size), dtype=arr.dtype)
        out[np.ix_(rvalid, cvalid)] = arr[np.ix_(rows[rvalid], cols[cvalid])]
        if is_tensor:
            import torch

            return torch.from_numpy(out).to(mask.device)
        return out

    def _nearest_index(self, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Native index under each working pixel centre along `axis`, and which are content."""
        n, c, o = self.shape_hw[axis], self.content_hw[axis], self.offset[axis]
        centres = np.arange(self.size) + 0.5 - o
        idx = np.floor(centres * (n / c)).astype(np.int64)
        valid = (centres >= 0) & (centres < c)
        return np.clip(idx, 0, n - 1), valid


def to_working_grid(
    slices: torch.Tensor, grid: WorkingGrid, pad_value: float | None = None
) -> torch.Tensor:
    """Functional form of `WorkingGrid.to_working`."""
    return grid.to_working(slices, pad_value)


def from_working_grid(maps: torch.Tensor, grid: WorkingGrid) -> torch.Tensor:
    """Functional form of `WorkingGrid.from_working`."""
    return grid.from_working(maps)
