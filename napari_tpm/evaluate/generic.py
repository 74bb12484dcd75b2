"""Generic mode: any labelled volumes, support painted in the query itself or another volume."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from napari_tpm.progress import Progress
from napari_tpm.session import SegmentationSession

from .binary import evaluate_binary
from .common import (
    CaseCache,
    Options,
    Results,
    SessionFactory,
    Sessions,
    default_session_factory,
    multiclass_jobs,
    pair_rng,
    product_options,
    with_prototypes,
)
from .datasets import Case
from .multiclass import evaluate_multiclass
from .protocols import labelled_slices, round_robin_support


def run_generic(
    cases: Sequence[Case],
    classes: dict[str, int],
    checkpoint: str,
    results: Results,
    *,
    options: Options | None = None,
    support: str = "same",
    adnet_checkpoint: str | None = None,
    multiclass: bool = False,
    mf_checkpoint: str | None = None,
    session_factory: SessionFactory | None = None,
) -> Iterator[Progress]:
    """Evaluate ``checkpoint`` on labelled volumes (generator of Progress; fills ``results``).

    ``support="same"`` paints the support slice in the query volume itself (the interactive use:
    how well one painted slice segments the rest of that scan); ``"other"`` paints it in the
    next volume that shows the structure (round robin), as in the paper's cross-volume setting.
    ``adnet_checkpoint`` adds Table 1's ADNet row (one prototype) and is the network behind
    the ADNet++ max rule of the multi-class table (else the main checkpoint is).
    """
    options = options or Options()
    if support not in ("same", "other"):
        raise ValueError(f"support must be 'same' or 'other', got {support!r}")
    if support == "other" and len(cases) < 2:
        raise ValueError("support 'other' needs at least two volumes")
    sessions = Sessions(session_factory or default_session_factory(options))
    if not adnet_checkpoint:
        results.note("no ADNet checkpoint given: the ADNet row of Table 1 is omitted")
    if multiclass and not adnet_checkpoint:
        results.note("ADNet++ max rule computed on the main checkpoint (no ADNet checkpoint)")
    results.meta.update(
        {
            "mode": "generic",
            "support": support,
            "protocol": options.protocol,
            "prototypes": list(options.prototypes),
            "classes": dict(classes),
            "checkpoint": checkpoint,
            "adnet_checkpoint": adnet_checkpoint,
            "mf_checkpoint": mf_checkpoint,
            "volumes": [c.name for c in cases],
            "prior_grid": [float(p) for p in options.prior_grid],
        }
    )
    cache = CaseCache()
    presence = _presence(cases, classes, cache)
    products = (
        Sessions(default_session_factory(product_options(options)))
        if options.product is not None
        else None
    )
    adnet_opts = with_prototypes(options, (1,))
    for qi, case in enumerate(cases):
        query = cache.get(case)
        base = {"run": 1, "fold": 0}
        binary = [("TPM", checkpoint, options)]
        if adnet_checkpoint:
            binary.append(("ADNet", adnet_checkpoint, adnet_opts))
        for model, ckpt, opts in binary:
            meta = {**base, "model": model, "checkpoint": str(ckpt)}
            made = products(ckpt) if products and model == "TPM" else None
            _generic_binary(
                sessions(ckpt), cases, qi, query, classes, presence, support, opts, meta,
                results, cache, made,
            )  # fmt: skip
        if multiclass:
            for ckpt, model, rule in multiclass_jobs(
                checkpoint, adnet_checkpoint or checkpoint, mf_checkpoint
            ):
                meta = {**base, "model": model or "ADNet++", "checkpoint": str(ckpt)}
                made = products(ckpt) if products and model is not None else None
                _generic_multiclass(
                    sessions(ckpt), cases, qi, query, classes, presence, support, options, meta,
                    results, cache, tpm=model is not None, rule=rule, product=made,
                )  # fmt: skip
        yield Progress(qi + 1, len(cases), case.name)


def _presence(cases: Sequence[Case], classes: dict[str, int], cache: CaseCache) -> np.ndarray:
    """present[i, j]: volume i shows class j (read once, up front)."""
    out = np.zeros((len(cases), len(classes)), bool)
    for i, case in enumerate(cases):
        labels = cache.get(case).labels
        out[i] = [bool((labels == v).any()) for v in classes.values()]
    return out


def _generic_binary(
    session, cases, qi, query, classes, presence, support, options, meta, results, cache, made
) -> None:
    for j, (organ, value) in enumerate(classes.items()):
        if not presence[qi, j]:
            results.note(f"{query.name}: no {organ} (label {value}); not evaluated")
            continue
        sup = None
        if support == "other":
            si = round_robin_support(len(cases), qi, presence[:, j])
            if si is None:
                results.note(f"{organ}: no other volume shows it; not evaluated")
                continue
            sup = cache.get(cases[si])
        zs = labelled_slices(query.labels == value)
        if options.protocol == "EP1" and len(zs) < options.n_shot:
            results.note(f"{query.name}: {organ} spans fewer than {options.n_shot} slices (EP1)")
        results.records.extend(
            evaluate_binary(session, query, sup, value, options, {**meta, "organ": organ}, made)
        )


def _generic_multiclass(
    session,
    cases,
    qi,
    query,
    classes,
    presence,
    support,
    options,
    meta,
    results,
    cache,
    *,
    tpm: bool,
    rule: bool,
    product: SegmentationSession | None = None,
) -> None:
    if not presence[qi].any():
        results.note(f"{query.name}: none of the classes present; multi-class not evaluated")
        return
    sup, si = None, qi
    if support == "other":
        si = round_robin_support(len(cases), qi, presence.any(axis=1))
        if si is None:
            return
        sup = cache.get(cases[si])
    results.records.extend(
        evaluate_multiclass(
            session,
            query,
            sup,
            classes,
            options,
            pair_rng(options.seed, 1, qi, si),
            max_rule=rule,
            tpm=tpm,
            meta=meta,
            product=product,
        )
    )


__all__ = ["run_generic"]
