"""A training-free encoder: multi-scale filters with context and body-relative position.

Why not just local filters: on real CT a local intensity/edge/texture bank leaves kidneys and
spleen in the same place in feature space as every other soft tissue of the same density, and a
single tied prototype then scores a mean Dice near 0.16. What separates organs without learning
is *context* (what surrounds a voxel over several centimetres: fat, air, bone, other organs) and
*where* the voxel lies in the body. So next to smoothed intensity and Hessian eigenvalues at
fine to large scales (1 to 16 working pixels, about 2 to 30 mm on the 256 x 256 working grid),
this bank adds soft intensity histograms of neighbourhoods, the fraction of body around each
pixel ("depth"), and coordinates relative to the body's bounding box on each slice. Support and
query come from the same (or a similarly oriented) volume, so a position relative to the body is
as much a property of an organ as its density. Gradient magnitude and local standard deviation
are available as groups but off by default: they lowered the one-slice Dice on the development
volumes (benchmarks/RESULTS-encoders.md has the ablation).

Every channel is standardised with fixed constants (never batch statistics, so a slice's
features do not depend on which slices share its batch), groups are weighted so each counts the
same whatever its channel count, and a constant "anchor" channel is appended before the unit
normalisation so that differences in magnitude, not only direction, survive it: for features
small against the anchor, ``D2`` is close to the scaled Euclidean distance.

Everything is a separable Gaussian convolution in torch, batched, on CPU or GPU; the only step
on the CPU is the largest-component search of the (small, stride-resolution) body mask.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_tpm._threads import one_cpu_thread
from napari_tpm.encoders.base import Encoder
from napari_tpm.encoders.body_frame import body_boxes, box_coordinates

#: Feature groups in channel order; ``groups`` picks a subset.
GROUPS: tuple[str, ...] = (
    "intensity",
    "gradient",
    "hessian",
    "std",
    "histogram",
    "body",
    "position",
)

#: Fixed (centre, scale) per group: the typical mean and spread of the raw channels inside the
#: body on the normalised development volumes (CT window + z-score, MR clip + z-score), rounded.
#: Fixed, never batch statistics, so features do not depend on the batch a slice is in.
DEFAULT_GROUP_STATS: dict[str, tuple[float, float]] = {
    "intensity": (0.4, 0.8),
    "gradient": (0.25, 0.2),
    "hessian": (0.0, 0.15),
    "std": (0.5, 0.25),
    "histogram": (0.15, 0.15),
    "body": (0.85, 0.15),
    "position": (0.0, 0.5),
}

#: Groups of the default bank: gradient magnitude and local standard deviation are left out
#: because on the development volumes they lowered the one-slice Dice (edge responses fire on
#: every organ boundary alike); see benchmarks/RESULTS-encoders.md.
DEFAULT_GROUPS: tuple[str, ...] = ("intensity", "hessian", "histogram", "body", "position")

#: Relative group weights of the default bank (chosen on the development volumes, same table).
DEFAULT_GROUP_WEIGHTS: dict[str, float] = {
    "intensity": 1.0,
    "gradient": 1.0,
    "hessian": 1.0,
    "std": 1.0,
    "histogram": 2.0,
    "body": 1.0,
    "position": 1.5,
}


#: Centres of the soft intensity bins (normalised units). They reach 3.0: with the robust CT
#: map (HU + 55) / 95, a contrast-enhanced kidney reads 2.0-2.5 (150-190 HU), and with bins
#: only up to 2.0 a kidney 40 HU brighter than another patient's fell beyond the last bin,
#: so its neighbourhood histogram matched nothing (BTCV 18's kidneys at 184 HU against 140 HU
#: in its partners). On the tuning volumes' every ordered pair, from another patient's paint:
#: BTCV kidneys 0.681 -> 0.740, CHAOS 0.702 -> 0.735; on the painted scan itself BTCV
#: 0.887 -> 0.885, CHAOS 0.865 -> 0.853 (benchmarks/RESULTS-accuracy.md, "Histogram bins up
#: to 3.0"). Saved models keep the centres they were trained with (their config).
DEFAULT_HIST_CENTRES: tuple[float, ...] = (-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def gaussian_kernel1d(sigma: float, truncate: float = 3.0) -> torch.Tensor:
    """Normalised 1-D Gaussian taps for ``sigma`` in pixels (a delta for sigma <= 0)."""
    if sigma <= 1e-3:
        return torch.ones(1)
    radius = max(1, math.ceil(truncate * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every channel of ``x [B, M, H, W]`` (replicate borders).

    Two implementations with identical results, picked for speed on CPU: large maps are
    filtered as a weighted sum of shifted views (one fused pass per tap, no im2col), small
    many-channel maps with a depthwise convolution.
    """
    k = gaussian_kernel1d(sigma).to(device=x.device, dtype=x.dtype)
    if k.numel() == 1:
        return x
    r = k.numel() // 2
    h, w = x.shape[-2:]
    if h * w > 128 * 128:
        p = F.pad(x, (0, 0, r, r), mode="replicate")
        y = k[0] * p[..., 0:h, :]
        for i in range(1, k.numel()):
            y = y + k[i] * p[..., i : i + h, :]
        p = F.pad(y, (r, r, 0, 0), mode="replicate")
        y = k[0] * p[..., 0:w]
        for i in range(1, k.numel()):
            y = y + k[i] * p[..., i : i + w]
        return y
    m = x.shape[1]
    y = F.pad(x, (0, 0, r, r), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(m, 1, -1, 1), groups=m)
    y = F.pad(y, (r, r, 0, 0), mode="replicate")
    return F.conv2d(y, k.view(1, 1, 1, -1).expand(m, 1, 1, -1), groups=m)


def _derivatives(lum: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Central differences Lx, Ly, Lxx, Lyy, Lxy of ``lum [B, M, H, W]`` (per pixel)."""
    p = F.pad(lum, (1, 1, 1, 1), mode="replicate")
    c = p[..., 1:-1, 1:-1]
    lx = 0.5 * (p[..., 1:-1, 2:] - p[..., 1:-1, :-2])
    ly = 0.5 * (p[..., 2:, 1:-1] - p[..., :-2, 1:-1])
    lxx = p[..., 1:-1, 2:] - 2 * c + p[..., 1:-1, :-2]
    lyy = p[..., 2:, 1:-1] - 2 * c + p[..., :-2, 1:-1]
    lxy = 0.25 * (p[..., 2:, 2:] - p[..., 2:, :-2] - p[..., :-2, 2:] + p[..., :-2, :-2])
    return lx, ly, lxx, lyy, lxy


class FilterBankEncoder(Encoder):
    """Hand-made features with context; no learnable parameters, ``config()`` defines it.

    Args:
        stride: output stride (features are computed at this resolution for scales >= stride).
        scales: Gaussian scales in input pixels for the intensity, gradient, Hessian and local
            standard deviation groups.
        hist_centres: centres (in z-score units) of the soft intensity bins.
        hist_width: half-width (standard deviation) of each soft bin, z-score units.
        hist_scales: neighbourhood scales (pixels) at which the bin occupancies are averaged.
        body_scales: scales at which the body mask is averaged ("how deep inside the body").
        body_margin: a pixel is body when its smoothed value exceeds the slice minimum by this
            much (z-score units). Air sits exactly at the minimum in windowed CT and near it in
            MR, so this finds the body whatever the volume's statistics.
        position_frame: "body" (coordinates across the body's bounding box on each slice) or
            "image" (across the whole slice, for comparison).
        body_open: radius (stride-resolution pixels) of the square opening applied to the body
            mask; it detaches the patient table and thin bridges to the arms.
        box_quantile: the body box spans these lower/upper quantiles of the body's pixel
            coordinates (not its extreme pixels), so a few stray pixels cannot stretch it.
        groups: which feature groups to use, a subset of ``GROUPS``.
        group_weights: relative weight of each group (each group's channels are additionally
            scaled by 1/sqrt(n_channels), so a group's weight does not grow with its size).
        group_stats: ``{group: (centre, scale)}`` standardising each group's raw channels.
        anchor: value of the constant channel appended before the unit normalisation.
        working_mm: when set, the session puts slices on a working grid of this many
            millimetres per pixel (see ``session._make_view``), so every scale above is a fixed
            distance in the body; None keeps the paper's 256-pixel square.
    """

    name = "filterbank"

    def __init__(
        self,
        stride: int = 4,
        scales: tuple[float, ...] | list[float] = (1.0, 2.0, 4.0, 8.0, 16.0),
        hist_centres: tuple[float, ...] | list[float] = DEFAULT_HIST_CENTRES,
        hist_width: float = 0.25,
        hist_scales: tuple[float, ...] | list[float] = (4.0, 16.0),
        body_scales: tuple[float, ...] | list[float] = (8.0, 24.0),
        body_margin: float = 0.15,
        position_frame: str = "body",
        body_open: int = 2,
        box_quantile: float = 0.01,
        groups: tuple[str, ...] | list[str] = DEFAULT_GROUPS,
        group_weights: dict[str, float] | None = None,
        group_stats: dict[str, tuple[float, float]] | None = None,
        anchor: float = 1.0,
        working_mm: float | None = None,
    ) -> None:
        super().__init__()
        unknown = set(groups) - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown filter-bank groups {sorted(unknown)}; known: {GROUPS}")
        self.stride = int(stride)
        self.scales = tuple(float(s) for s in scales)
        self.hist_centres = tuple(float(c) for c in hist_centres)
        self.hist_width = float(hist_width)
        self.hist_scales = tuple(float(s) for s in hist_scales)
        self.body_scales = tuple(float(s) for s in body_scales)
        self.body_margin = float(body_margin)
        if position_frame not in ("body", "image"):
            raise ValueError(f"position_frame must be 'body' or 'image', got {position_frame!r}")
        self.position_frame = position_frame
        self.body_open = int(body_open)
        self.box_quantile = float(box_quantile)
        self.groups = tuple(g for g in GROUPS if g in groups)
        weights = dict(DEFAULT_GROUP_WEIGHTS)
        weights.update(group_weights or {})
        self.group_weights = {g: float(weights[g]) for g in self.groups}
        stats = dict(DEFAULT_GROUP_STATS)
        stats.update(group_stats or {})
        self.group_stats = {g: (float(stats[g][0]), float(stats[g][1])) for g in self.groups}
        self.anchor = float(anchor)
        if working_mm is not None and not 0.1 <= float(working_mm) <= 10.0:
            raise ValueError(f"working_mm must lie in [0.1, 10] mm, got {working_mm!r}")
        self.working_mm = None if working_mm is None else float(working_mm)
        self._sizes = self._group_sizes()
        self.out_channels = sum(self._sizes.values()) + 1

    # ------------------------------------------------------------------ description
    def _group_sizes(self) -> dict[str, int]:
        n = len(self.scales)
        size = {
            "intensity": n,
            "gradient": n,
            "hessian": 2 * n,
            "std": n,
            "histogram": len(self.hist_centres) * len(self.hist_scales),
            "body": len(self.body_scales),
            "position": 2,
        }
        return {g: size[g] for g in self.groups}

    def group_channels(self, group: str) -> slice | None:
        """The output channels of ``group`` (groups in ``GROUPS`` order, the anchor last)."""
        start = 0
        for g, size in self._sizes.items():
            if g == group:
                return slice(start, start + size)
            start += size
        return None

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "stride": self.stride,
            "scales": list(self.scales),
            "hist_centres": list(self.hist_centres),
            "hist_width": self.hist_width,
            "hist_scales": list(self.hist_scales),
            "body_scales": list(self.body_scales),
            "body_margin": self.body_margin,
            "position_frame": self.position_frame,
            "body_open": self.body_open,
            "box_quantile": self.box_quantile,
            "groups": list(self.groups),
            "group_weights": dict(self.group_weights),
            "group_stats": {g: list(v) for g, v in self.group_stats.items()},
            "anchor": self.anchor,
            "working_mm": self.working_mm,
        }

    # ------------------------------------------------------------------ features
    def _low_sigma(self, sigma: float) -> float:
        """Blur still needed at stride resolution after an s x s average (variance (s^2-1)/12)."""
        s = self.stride
        return math.sqrt(max(sigma**2 - (s * s - 1) / 12.0, 0.0)) / s

    def raw_groups(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unstandardised feature groups at stride resolution, ``{group: [B, n, h, w]}``."""
        s = self.stride
        h, w = x.shape[-2:]
        ph, pw = (-h) % s, (-w) % s
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        pool = (lambda t: F.avg_pool2d(t, s)) if s > 1 else (lambda t: t)
        x_low = pool(x)
        want = set(self.groups)
        x2_low = pool(x * x) if "std" in want else x_low
        out: dict[str, list[torch.Tensor]] = {g: [] for g in self.groups}
        for sigma in self.scales:
            fine = sigma < s  # fine scales: filter at full resolution, then average down
            sl = sigma if fine else self._low_sigma(sigma)
            lum = gaussian_blur(x if fine else x_low, sl)
            unit = 1.0 if fine else float(s)  # derivatives per map pixel -> per input pixel
            maps = {"intensity": [lum]}
            if "gradient" in want or "hessian" in want:
                # scale-normalised (sigma * d, sigma^2 * d^2) so all scales respond alike
                lx, ly, lxx, lyy, lxy = _derivatives(lum)
                maps["gradient"] = [torch.sqrt(lx * lx + ly * ly + 1e-12) * (sigma / unit)]
                t2 = (sigma / unit) ** 2
                trace = (lxx + lyy) * t2
                aniso = torch.sqrt((lxx - lyy) ** 2 + 4 * lxy * lxy + 1e-12) * t2
                maps["hessian"] = [0.5 * (trace + aniso), 0.5 * (trace - aniso)]
            if "std" in want:
                var = gaussian_blur(x * x if fine else x2_low, sl) - lum * lum
                maps["std"] = [torch.sqrt(var.clamp_min(0) + 1e-8)]
            for g, items in maps.items():
                if g in want:
                    out[g] += [pool(t) if sigma < s else t for t in items]
        if "histogram" in want:
            c = torch.tensor(self.hist_centres, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
            occ = pool(torch.exp(-0.5 * ((x - c) / self.hist_width) ** 2))
            for scale in self.hist_scales:
                out["histogram"].append(gaussian_blur(occ, self._low_sigma(scale)))
        if "body" in want or "position" in want:
            body = self._body_mask(x_low)
            if "body" in want:
                for scale in self.body_scales:
                    out["body"].append(gaussian_blur(body, self._low_sigma(scale)))
            if "position" in want:
                frame = body if self.position_frame == "body" else torch.ones_like(body)
                out["position"].append(self._position(frame))
        return {g: torch.cat(v, 1) for g, v in out.items()}

    def _body_mask(self, x_low: torch.Tensor) -> torch.Tensor:
        """Body at stride resolution: above the slice floor, opened to cut thin links.

        The opening (a square of side 2 * body_open + 1) detaches the patient table and thin
        skin bridges to the arms, which would otherwise join the largest component and stretch
        the bounding box.
        """
        floor = x_low.amin((1, 2, 3), keepdim=True)
        body = (gaussian_blur(x_low, 0.5) > floor + self.body_margin).to(x_low.dtype)
        r = self.body_open
        if r > 0:
            eroded = -F.max_pool2d(-body, 2 * r + 1, stride=1, padding=r)
            body = F.max_pool2d(eroded, 2 * r + 1, stride=1, padding=r)
        return body

    def slice_boxes(self, x: torch.Tensor) -> np.ndarray:
        """``(B, 4)`` body boxes ``(y0, y1, x0, x1)`` of slices ``x [B, 1, H, W]``, in pixels of
        the stride-resolution map, by the rule the position channels use.

        The session reads these on a scan's axis-0 slices to give slices cut along another
        axis the same position frame (:mod:`napari_tpm.axial_frame`).
        """
        s = self.stride
        h, w = x.shape[-2:]
        x = F.pad(x.float(), (0, (-w) % s, 0, (-h) % s), mode="replicate")
        x_low = F.avg_pool2d(x, s) if s > 1 else x
        body = self._body_mask(x_low)
        if self.position_frame != "body":
            body = torch.ones_like(body)
        return body_boxes(body[:, 0].detach().cpu().numpy() > 0.5, self.box_quantile)

    def standardised_position(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw position coordinates ``[B, 2, h, w]`` as :meth:`features` puts them in its
        output, before the unit normalisation: standardised and weighted."""
        centre, scale = self.group_stats["position"]
        return (raw - centre) / scale * (self.group_weights["position"] / math.sqrt(2))

    def _position(self, body: torch.Tensor) -> torch.Tensor:
        """Coordinates in [-1, 1] across each slice's body bounding box, ``[B, 2, h, w]``."""
        mask = body[:, 0].detach().cpu().numpy() > 0.5
        boxes = torch.from_numpy(body_boxes(mask, self.box_quantile))
        return box_coordinates(boxes.to(device=body.device, dtype=body.dtype), body.shape[-2:])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # Reduced precision buys nothing for a few small convolutions and would blur the
        # soft-tissue contrast the bank relies on, so bf16 autocast is switched off here.
        with torch.autocast(device_type=x.device.type, enabled=False), one_cpu_thread(x.device):
            raw = self.raw_groups(x.float())
        parts = []
        for g in self.groups:
            centre, scale = self.group_stats[g]
            t = (raw[g] - centre) / scale
            parts.append(t * (self.group_weights[g] / math.sqrt(t.shape[1])))
        ref = parts[0]
        parts.append(torch.full_like(ref[:, :1], self.anchor))
        return torch.cat(parts, 1)
