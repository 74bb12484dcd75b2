"""The Dice-vs-class-prior figure: how much the prior matters, and where each rule lands.

One panel per structure. The curve is the mean Dice over the query volumes when one prior is
used for the whole volume (a threshold on the cached log-odds), on a logit-spaced prior axis.
Marked on it: CE-T (prior 0.5), the estimators AvgEst and LinEst (their mean prior, their mean
Dice), the oracle single prior of each volume (its ICP: the prior that predicts the true voxel
count, mean prior and mean Dice), and as a dashed line the per-slice oracle OCP. The figure is
drawn on a bare ``matplotlib.figure.Figure`` (Agg), so no display and no pyplot state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .datasets import organ_title

_MARKERS = {
    "CE-T": ("o", "tab:blue"),
    "AvgEst": ("s", "tab:orange"),
    "LinEst": ("^", "tab:green"),
    "ICP": ("*", "tab:red"),
}
_STYLES = ("-", "--", ":", "-.")
_TICKS = (0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999)


def _finite_mean(values: Sequence[float | None]) -> float:
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else math.nan


def _prior_value(p: Any) -> float | None:
    if isinstance(p, list):
        vals = [v for v in p if v is not None]
        return float(np.mean(vals)) if vals else None
    return p


def dice_prior_figure(
    records: Sequence[dict[str, Any]],
    prior_grid: Sequence[float],
    path: str | Path,
    *,
    model: str = "TPM",
    title: str = "",
) -> Path | None:
    """Write the figure as PNG to ``path``; returns the path, or None without binary records."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    recs = [r for r in records if r["kind"] == "binary" and r["model"] == model]
    if not recs:
        return None
    organs = list(dict.fromkeys(r["organ"] for r in recs))
    ks = sorted({r["prototypes"] for r in recs})
    grid = np.asarray(prior_grid, dtype=np.float64)
    ncol = min(len(organs), 4)
    nrow = math.ceil(len(organs) / ncol)
    fig = Figure(figsize=(3.6 * ncol, 3.2 * nrow))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax, organ in zip(axes.ravel(), organs):
        for style, k in zip(_STYLES * 4, ks):
            sub = [r for r in recs if r["organ"] == organ and r["prototypes"] == k]
            curves = np.asarray(
                [[np.nan if d is None else d for d in r["curve"]] for r in sub], dtype=np.float64
            )
            with np.errstate(invalid="ignore"):
                mean_curve = np.nanmean(curves, axis=0) if curves.size else grid * np.nan
            label = f"K={k}"
            ax.plot(grid, mean_curve, style, color="0.3", lw=1.4, label=label)
            for m in ("CE-T", "AvgEst", "LinEst"):
                entries = [r["methods"][m] for r in sub if r["methods"][m].get("available")]
                if not entries:
                    continue
                px = _finite_mean([_prior_value(e["prior"]) for e in entries])
                py = _finite_mean([e["dice"] for e in entries])
                marker, color = _MARKERS[m]
                ax.plot(
                    px, py, marker, color=color, ms=8, mec="k",
                    label=m if k == ks[0] else None,
                )  # fmt: skip
            px = _finite_mean([r["icp"] for r in sub])
            py = _finite_mean([r["dice_icp"] for r in sub])
            marker, color = _MARKERS["ICP"]
            ax.plot(
                px, py, marker, color=color, ms=11, mec="k",
                label="oracle (volume ICP)" if k == ks[0] else None,
            )  # fmt: skip
            ocp = _finite_mean([r["methods"]["OCP"]["dice"] for r in sub])
            if math.isfinite(ocp):
                ax.axhline(
                    ocp, ls=style, color="tab:purple", lw=0.9,
                    label="OCP (per slice)" if k == ks[0] else None,
                )  # fmt: skip
        ax.set_xscale("logit")
        ax.set_xlim(grid.min(), grid.max())
        ticks = [t for t in _TICKS if grid.min() <= t <= grid.max()]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=7)
        ax.minorticks_off()
        ax.set_ylim(0, 1)
        ax.set_title(organ_title(organ))
        ax.set_xlabel("class prior")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(organs) :]:
        ax.axis("off")
    axes[0, 0].set_ylabel("Dice")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


__all__ = ["dice_prior_figure"]
