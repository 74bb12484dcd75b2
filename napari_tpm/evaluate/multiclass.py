"""Table 2: all structures jointly from one support slice; TPM rules and the ADNet++ max rule."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from napari_tpm.session import SegmentationSession
from napari_tpm.tpm import adnetpp_posterior, squared_distance

from .common import Options, clean, drain, estimator_priors, oracle_thresholds, sigmoid_neg
from .datasets import LoadedCase
from .metrics import dice, prior_thresholds
from .protocols import MAX_RULE, METHODS, PRODUCT, most_labels_slice, paint_slice


def adnetpp_labels(session: SegmentationSession, batch: int = 8) -> np.ndarray:
    """ADNet++'s max-rule labels (0 background, else the paint's label values) for the query.

    Per class a binary posterior ``h_F,k / (h_F,k + h_B,k)``, background ``1 - max_k p_k``, a
    softmax over them, upsampled to the native grid, argmax (tpm-method.md §9). It reads the
    session's cached features and class prototypes, so it costs no encoder call. For a model
    without a learned threshold the session's self-calibration offset is applied as the prior
    (0.5 for trained checkpoints, as in the paper).
    """
    protos = session.prototypes
    if any(m.shape[0] != 1 for m, _ in protos):
        raise ValueError("the max rule is defined for one prototype per class")
    means = torch.cat([m for m, _ in protos]).float()
    feats = session.features()
    grid = session.working_grid
    model = session.model
    prior = float(sigmoid_neg(-session.score_offset))
    n = feats.shape[0]
    out = np.zeros((n, *grid.shape_hw), dtype=np.uint8)
    for lo in range(0, n, batch):
        d2 = squared_distance(feats[lo : lo + batch].float(), means)
        post = adnetpp_posterior(d2, model.sigma_f, model.sigma_b, prior=prior)
        out[lo : lo + batch] = grid.from_working(post).argmax(1).to(torch.uint8).numpy()
    lut = np.asarray([0, *session.label_values])
    return np.moveaxis(lut[out], 0, session.axis)


def _segment_query(
    session: SegmentationSession,
    query: LoadedCase,
    support: LoadedCase | None,
    paint: np.ndarray,
    options: Options,
    **segment: Any,
) -> None:
    """``session`` on the query volume, segmented from ``paint`` on ``support`` (None: on the
    query itself); ``segment`` goes to ``session.segment`` (e.g. the prototype count)."""
    session.set_image(query.image, query.spacing, modality=options.modality)
    drain(
        session.segment(
            paint,
            support_image=None if support is None else support.image,
            support_spacing=None if support is None else support.spacing,
            **segment,
        )
    )


def _product_entry(
    product: SegmentationSession,
    query: LoadedCase,
    support: LoadedCase | None,
    paint: np.ndarray,
    options: Options,
    per_class: Any,
) -> dict[str, Any]:
    """The product's labels from the same paint (its default prototype count), scored."""
    _segment_query(product, query, support, paint, options)
    return {
        "dice": per_class(product.labels(keep_paint=False)),
        "prior": clean(product.auto_prior()),
        "prototypes": int(product.n_prototypes),
        "available": True,
    }


def evaluate_multiclass(
    session: SegmentationSession,
    query: LoadedCase,
    support: LoadedCase | None,
    classes: dict[str, int],
    options: Options,
    rng: np.random.Generator,
    *,
    max_rule: bool = False,
    tpm: bool = True,
    meta: dict[str, Any] | None = None,
    rule_model: str = "ADNet++",
    product: SegmentationSession | None = None,
) -> list[dict[str, Any]]:
    """All classes jointly from the support slice with the most labels; per-class 3D Dice.

    Returns one record for the TPM rules (CE-T, AvgEst, LinEst, OCP) when ``tpm``, and one for
    the ADNet++ max rule when ``max_rule``. Classes absent from the support slice cannot be
    predicted and score 0 wherever the query has them. With a ``product`` session (the
    product's options, same checkpoint) the TPM record also holds a "product" entry: what the
    CLI and the dock write from the same paint, with the product's own prototype count, its
    auto prior and its post-processing.
    """
    meta = dict(meta or {})
    support = None if support is None else support.like(query)
    src = query if support is None else support
    values = list(classes.values())
    z = most_labels_slice(src.labels, values, rng)
    paint = paint_slice(src.labels, z, values)
    painted = sorted(int(v) for v in np.unique(paint) if v)
    _segment_query(session, query, support, paint, options, n_prototypes=1)
    truth = query.labels
    base = {
        "kind": "multiclass",
        **meta,
        "query": query.name,
        "support": src.name,
        "same_volume": support is None,
        "support_slices": [int(z)],
        "painted": painted,
        "classes": dict(classes),
    }

    def per_class(pred: np.ndarray) -> dict[str, float | None]:
        return {name: clean(dice(pred == v, truth == v)) for name, v in classes.items()}

    records = []
    if tpm:
        sc = session.scores()
        lut = np.asarray([0, *session.label_values])[1:]
        best = lut[session.best_class()]
        fg_truth = np.isin(truth, painted)
        counts = fg_truth.reshape(truth.shape[0], -1).sum(axis=1)
        size, loc = session.support_fraction, session.support_location
        priors = estimator_priors(session, "multiclass", size, loc)
        methods: dict[str, dict[str, Any]] = {}
        n = truth.shape[0]
        for m in METHODS:
            if m == "CE-T":
                tau, prior = np.zeros(n), 0.5
            elif m == "OCP":
                tau, prior = oracle_thresholds(sc, counts), None
            elif priors[m] is None:
                methods[m] = {"dice": None, "prior": None, "available": False}
                continue
            else:
                prior = priors[m]
                tau = np.full(n, float(prior_thresholds(prior)))
            pred = np.where(sc > tau[:, None, None].astype(np.float32), best, 0)
            methods[m] = {"dice": per_class(pred), "prior": prior, "available": True}
        if product is not None:
            methods[PRODUCT] = _product_entry(product, query, support, paint, options, per_class)
        records.append({**base, "method_family": "tpm", "methods": methods})
    if max_rule:
        pred = adnetpp_labels(session)
        records.append(
            {
                **base,
                "model": rule_model,
                "method_family": "max-rule",
                "methods": {MAX_RULE: {"dice": per_class(pred), "prior": 0.5, "available": True}},
            }
        )
    return records


__all__ = ["adnetpp_labels", "evaluate_multiclass"]
