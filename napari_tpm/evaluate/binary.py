"""Table 1: one structure, one support slice (EP2) or three (EP1), every prior rule.

One segmentation of a query volume yields every row of the paper's Table 1 for it:

* CE-T: p = 0.5 (the learned threshold; for a model without one, the session's self-calibration
  on the support slice);
* AvgEst / LinEst: the checkpoint's estimators (``model.estimators["sp" | "mp"]``), LinEst from
  the support's painted fraction and slice location; "n/a" when the checkpoint has none (the
  training-free filter bank);
* OCP: per query slice, the threshold that predicts exactly the slice's true foreground count
  (the oracle; an upper bound, not a method);
* with a ``product`` session (the product's default options), what the CLI and the dock write:
  its ``labels()`` at the auto prior, with the post-processing (connected components, neck
  cutting, slice continuity, the second pass for another volume's paint), scored on the same
  slices without writing the paint over them. The paper's rules threshold the plain one-pass
  TPM's scores; a user gets this;
* a Dice-vs-prior curve on a fixed grid of priors, and the single best-count prior of the whole
  volume (its ICP), for the figure.

Records are plain dicts (JSON-ready) so tables, figures and per-volume files are views of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_tpm.session import SegmentationSession

from .common import (
    Options,
    clean,
    count_threshold,
    drain,
    estimator_priors,
    oracle_thresholds,
    sigmoid_neg,
)
from .datasets import LoadedCase
from .metrics import dice, dice_curve, fraction_mse, prior_thresholds
from .protocols import (
    METHODS,
    PRODUCT,
    ep1_query_chunks,
    ep1_support_slices,
    middle_labelled_slice,
    paint_slice,
)


def _segment(
    session: SegmentationSession,
    paint: np.ndarray,
    support: LoadedCase | None,
    k: int,
    first: bool,
) -> None:
    if first:
        drain(
            session.segment(
                paint,
                support_image=None if support is None else support.image,
                support_spacing=None if support is None else support.spacing,
                n_prototypes=k,
            )
        )
    else:
        session.set_prototypes(k)


def _per_support(priors: list[float | None]) -> Any:
    """A rule's prior for the record: one value (EP2's one support slice), else one per slice."""
    return clean(priors[0]) if len(priors) == 1 else [clean(p) for p in priors]


def evaluate_binary(
    session: SegmentationSession,
    query: LoadedCase,
    support: LoadedCase | None,
    value: int,
    options: Options,
    meta: dict[str, Any] | None = None,
    product: SegmentationSession | None = None,
) -> list[dict[str, Any]]:
    """Every prior rule and prototype count for one structure in one query volume.

    Args:
        session: a session holding the model to evaluate (its image is replaced).
        query: the query volume; its labels are the truth (``labels == value``).
        support: the volume the support slice is painted on; None = the query itself.
        value: the structure's label value.
        options: protocol, prototype counts, prior grid.
        meta: fields copied into every record (dataset, fold, run, model...).
        product: a session with the product's options (same checkpoint), segmented a second
            time from the same support for the "product" entry; None: no such entry.

    Returns:
        One record per prototype count.
    """
    meta = dict(meta or {})
    truth_full = query.labels == value
    support = None if support is None else support.like(query)
    src = query if support is None else support
    sup_mask = src.labels == value
    if options.protocol == "EP2":
        sup_slices = [middle_labelled_slice(sup_mask)]
        chunks = [np.arange(query.labels.shape[0])]
    else:
        sup_slices = ep1_support_slices(sup_mask, options.n_shot)
        chunks = ep1_query_chunks(truth_full, options.n_shot)
    kept = np.concatenate(chunks)
    truth = truth_full[kept]
    counts = truth.reshape(truth.shape[0], -1).sum(axis=1)
    session.set_image(query.image, query.spacing, modality=options.modality)
    if product is not None:
        product.set_image(query.image, query.spacing, modality=options.modality)

    n_k = len(options.prototypes)
    scores = [np.empty(truth.shape, np.float32) for _ in range(n_k)]
    est_tau = {m: [np.zeros(len(kept)) for _ in range(n_k)] for m in ("AvgEst", "LinEst")}
    est_prior: dict[str, list[list[float | None]]] = {
        m: [[] for _ in range(n_k)] for m in ("AvgEst", "LinEst")
    }
    made = [np.zeros(truth.shape, bool) for _ in range(n_k)]  # the product's labels
    made_prior: list[list[float]] = [[] for _ in range(n_k)]
    pos = 0
    for z_s, chunk in zip(sup_slices, chunks):
        rows = slice(pos, pos + len(chunk))
        pos += len(chunk)
        if len(chunk) == 0:
            continue
        paint = paint_slice(src.labels, z_s, [value])
        for ki, k in enumerate(options.prototypes):
            _segment(session, paint, support, k, first=ki == 0)
            scores[ki][rows] = session.scores()[chunk]
            if product is not None:
                _segment(product, paint, support, k, first=ki == 0)
                made[ki][rows] = product.labels(keep_paint=False)[chunk] == value
                made_prior[ki].append(product.auto_prior())
            size, loc = session.support_fraction, session.support_location
            priors = estimator_priors(session, "sp" if k == 1 else "mp", size, loc)
            for m, p in priors.items():
                est_prior[m][ki].append(p)
                est_tau[m][ki][rows] = np.nan if p is None else float(prior_thresholds(p))

    records = []
    for ki, k in enumerate(options.prototypes):
        sc = scores[ki]
        taus: dict[str, np.ndarray | None] = {"CE-T": np.zeros(len(kept))}
        for m in ("AvgEst", "LinEst"):
            t = est_tau[m][ki]
            taus[m] = None if np.isnan(t).any() else t
        taus["OCP"] = oracle_thresholds(sc, counts)
        methods: dict[str, dict[str, Any]] = {}
        for m in METHODS:
            tau = taus[m]
            if tau is None:
                methods[m] = {"dice": None, "prior": None, "available": False}
                continue
            pred = sc > tau[:, None, None].astype(np.float32)
            entry: dict[str, Any] = {
                "dice": clean(dice(pred, truth)),
                "n_pred": int(np.count_nonzero(pred)),
                "fraction_mse": clean(fraction_mse(pred, truth), 9),
                "available": True,
            }
            if m == "OCP":
                entry["prior"] = None
                entry["slice_priors"] = [clean(p) for p in sigmoid_neg(tau)]
                entry["slice_counts_match"] = bool(
                    np.array_equal(pred.reshape(len(kept), -1).sum(1), counts)
                )
            elif m == "CE-T":
                entry["prior"] = 0.5
            else:
                entry["prior"] = _per_support(est_prior[m][ki])
            methods[m] = entry
        if product is not None:
            methods[PRODUCT] = {
                "dice": clean(dice(made[ki], truth)),
                "n_pred": int(np.count_nonzero(made[ki])),
                "prior": _per_support(made_prior[ki]),
                "available": True,
            }
        icp = float(sigmoid_neg(count_threshold(sc, int(truth.sum()))))
        icp_c = float(np.clip(icp, 1e-12, 1 - 1e-12))
        dice_icp = dice(sc > float(prior_thresholds(icp_c)), truth)
        records.append(
            {
                "kind": "binary",
                **meta,
                "query": query.name,
                "support": src.name,
                "same_volume": support is None,
                "label": int(value),
                "protocol": options.protocol,
                "prototypes": int(k),
                "support_slices": [int(z) for z in sup_slices],
                "evaluated_slices": len(kept),
                "n_true": int(truth.sum()),
                "methods": methods,
                "icp": clean(icp, 9),
                "dice_icp": clean(dice_icp),
                "curve": [clean(d, 5) for d in dice_curve(sc, truth, options.prior_grid)],
            }
        )
    return records


__all__ = ["evaluate_binary"]
