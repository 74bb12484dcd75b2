"""Post-training analysis: fit AvgEst / LinEst on ideal class priors of training episodes (§7.2).

The learned threshold is right *on average*; per image the ideal prior varies with the organ's
size and position. After training the model runs in eval mode on augmented supervoxel episodes
and records, per episode, the ideal class prior (ICP: the prior that predicts exactly the true
number of query foreground pixels), the support's foreground fraction and the support slice's
relative position. AvgEst is the mean ICP, LinEst a least-squares fit of ``logit(ICP)`` on
``(loc - 0.5)^2`` and the fraction. Both are stored in the checkpoint's ``estimators`` dict under
the keys the session reads: ``"sp"`` (one prototype), ``"mp"`` (EM prototypes) and, for
multi-foreground models, ``"multiclass"``.

``loc`` is the true relative position of the support slice in its volume, which is what the
session feeds LinEst at test time (the reference code used the index within the supervoxel's
slice run here, a proxy it flags itself).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_tpm.progress import Progress
from napari_tpm.tpm import (
    AvgEst,
    LinEst,
    fit_spherical_gmm,
    icp_from_scores,
    icp_multiclass,
    icp_single,
    log_odds_multi,
    masked_average,
    squared_distance,
    support_pixel_features,
)
from napari_tpm.train.ddp import resolve_device
from napari_tpm.train.episodes import EpisodeConfig, EpisodeDataset
from napari_tpm.train.losses import class_prototypes
from napari_tpm.train.volumes import TrainingVolume

#: Analysis episodes use their own stream, disjoint from every training rank's.
ANALYSIS_RANK = 1_000_003


def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, ``align_corners=False``: how the session maps scores onto the slice."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _fit(icps: list[float], sizes: list[float], locs: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    icp = np.asarray(icps, dtype=np.float64)
    if np.isfinite(icp).any():
        out["avgest"] = AvgEst().fit(icp).to_dict()
    with contextlib.suppress(ValueError):  # fewer than 3 usable records: AvgEst only
        out["linest"] = LinEst().fit(icp, sizes, locs).to_dict()
    return out


@torch.no_grad()
def analysis_records(
    model,
    volumes: Sequence[TrainingVolume],
    n_episodes: int = 1000,
    *,
    n_prototypes: int = 5,
    max_classes: int = 1,
    seed: int = 0,
    device: str | torch.device = "auto",
    episode_config: EpisodeConfig | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Per-episode ICPs, support fractions and slice locations for each estimator family.

    Returns ``{"sp": {...}, "mp": {...}[, "multiclass": {...}]}``, each with lists ``icp``,
    ``size``, ``loc`` (and ``n_classes`` for multiclass).
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    encoder = model.encoder.to(dev).eval()
    t_d, sigma_f, sigma_b = float(model.t_d), float(model.sigma_f), float(model.sigma_b)
    base = episode_config or EpisodeConfig()
    streams = {"binary": EpisodeConfig(**{**base.__dict__, "max_classes": 1})}
    if max_classes > 1:
        streams["multiclass"] = EpisodeConfig(**{**base.__dict__, "max_classes": max_classes})
    records: dict[str, dict[str, list[float]]] = {
        "sp": {"icp": [], "size": [], "loc": []},
        "mp": {"icp": [], "size": [], "loc": []},
    }
    if max_classes > 1:
        records["multiclass"] = {"icp": [], "size": [], "loc": [], "n_classes": []}
    total = n_episodes * len(streams)
    done = 0
    for name, cfg in streams.items():
        data = EpisodeDataset(volumes, cfg, seed=seed, rank=ANALYSIS_RANK)
        for i in range(n_episodes):
            ep = data[i]
            k = int(ep["n_classes"])
            size = tuple(ep["query_label"].shape)
            feats = encoder(torch.stack([ep["support"], ep["query"]]).to(dev)).float()
            fs, fq = feats[:1], feats[1:]
            masks = ep["support_masks"][:k].to(dev)
            label = ep["query_label"].to(dev)
            if name == "binary":
                n_fg = int((label == 1).sum())
                d2 = squared_distance(fq, masked_average(fs, masks[:1]))
                icp = icp_single(_up(d2, size), n_fg, t_d)
                _append(records["sp"], icp, ep["size"], ep["loc"])
                x = support_pixel_features(fs[0], masks[0])
                gmm = fit_spherical_gmm(x, n_prototypes, sigma_f, seed=0)
                d2m = squared_distance(fq, gmm.means)
                scores = log_odds_multi(d2m, gmm.weights, sigma_f, sigma_b)
                icp = icp_from_scores(_up(scores[:, None], size), n_fg)
                _append(records["mp"], icp, ep["size"], ep["loc"])
            else:
                n_fg = int((label > 0).sum())
                d2 = squared_distance(fq, class_prototypes(fs, masks))
                icp = icp_multiclass(_up(d2, size), sigma_f, sigma_b, n_fg)
                rec = records["multiclass"]
                _append(rec, icp, ep["size_total"], ep["loc"])
                rec["n_classes"].append(float(k))
            done += 1
            if progress is not None:
                progress(Progress(done, total, "analysis"))
    return records


def _append(rec: dict[str, list[float]], icp, size, loc) -> None:
    rec["icp"].append(float(icp))
    rec["size"].append(float(size))
    rec["loc"].append(float(loc))


def fit_estimators(
    model,
    volumes: Sequence[TrainingVolume],
    n_episodes: int = 1000,
    *,
    n_prototypes: int = 5,
    max_classes: int = 1,
    seed: int = 0,
    device: str | torch.device = "auto",
    episode_config: EpisodeConfig | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> dict[str, Any]:
    """AvgEst and LinEst for one prototype, ``n_prototypes`` EM prototypes and (with
    ``max_classes > 1``) the multi-class model, as the checkpoint's ``estimators`` dict.

    The multi-class AvgEst averages the episodes with the most classes, like the reference
    (which keeps the 5-class ones); LinEst uses all of them with the total support fraction.
    """
    rec = analysis_records(
        model,
        volumes,
        n_episodes,
        n_prototypes=n_prototypes,
        max_classes=max_classes,
        seed=seed,
        device=device,
        episode_config=episode_config,
        progress=progress,
    )
    out: dict[str, Any] = {
        "sp": {**_fit(**_cols(rec["sp"])), "episodes": len(rec["sp"]["icp"])},
        "mp": {
            **_fit(**_cols(rec["mp"])),
            "n_prototypes": int(n_prototypes),
            "episodes": len(rec["mp"]["icp"]),
        },
    }
    if "multiclass" in rec:
        mc = rec["multiclass"]
        entry = _fit(**_cols(mc))
        n_cls = np.asarray(mc["n_classes"])
        if n_cls.size:
            most = n_cls == n_cls.max()
            entry["avgest"] = AvgEst().fit(np.asarray(mc["icp"])[most]).to_dict()
        entry["episodes"] = len(mc["icp"])
        out["multiclass"] = entry
    return out


def _cols(rec: dict[str, list[float]]) -> dict[str, list[float]]:
    return {"icps": rec["icp"], "sizes": rec["size"], "locs": rec["loc"]}
