"""Paper mode: CHAOS / Synapse (or their development subsets) with the paper's folds."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from napari_tpm.progress import Progress

from .binary import evaluate_binary
from .common import (
    CaseCache,
    Options,
    Results,
    SessionFactory,
    Sessions,
    multiclass_jobs,
    pair_rng,
    product_options,
    shows,
    with_prototypes,
)
from .datasets import Case, DatasetSpec
from .head_session import head_name
from .head_session import session_factory as head_session_factory
from .multiclass import evaluate_multiclass
from .protocols import checkpoint_path, paper_folds, pattern_fields


def run_paper(
    spec: DatasetSpec,
    cases: Sequence[Case],
    checkpoints: str,
    results: Results,
    *,
    options: Options | None = None,
    runs: Sequence[int] = (1,),
    folds: Sequence[int] | None = None,
    setting: int = 1,
    adnet_checkpoints: str | None = None,
    mf_checkpoints: str | None = None,
    multiclass: bool = True,
    session_factory: SessionFactory | None = None,
) -> Iterator[Progress]:
    """The paper's protocol on a prepared dataset (generator of Progress; fills ``results``).

    Args:
        spec: CHAOS or SYNAPSE (label map, folds).
        cases: the dataset's volumes in numerically sorted order (``find_paper_cases``).
        checkpoints: pattern of the binary ("single-foreground trained") checkpoint per fold,
            e.g. ``runs/run{run}/fold{fold}/model.pt``; placeholders {fold}, {run}, {setting},
            {group}.
        runs: run numbers filled into {run}; mean and standard deviation are taken over them.
        folds: fold indices to evaluate (default all five).
        setting: 1 or 2, filled into {setting}. In setting 2 each organ uses the checkpoint of
            its class group ({group}: "kidneys" or "liver_spleen"), trained without the slices
            that show that group. Multi-class (Table 2) is run in setting 1 only.
        adnet_checkpoints: pattern of ADNet-mode checkpoints (Table 1 "ADNet" row, and the
            network behind the ADNet++ max rule of Table 2); omitted with a note when None.
        mf_checkpoints: pattern of multi-foreground trained checkpoints (Table 2).
        multiclass: also run Table 2: every fold volume takes a turn as the support, all the
            other fold volumes are its queries.
    """
    options = options or Options()
    if len(cases) != spec.n_volumes:
        raise ValueError(f"{spec.title} needs {spec.n_volumes} volumes, got {len(cases)}")
    if setting not in (1, 2):
        raise ValueError(f"setting must be 1 or 2, got {setting}")
    fields = pattern_fields(checkpoints)
    for extra in (adnet_checkpoints, mf_checkpoints):
        if extra:
            pattern_fields(extra)
    if len(runs) > 1 and "run" not in fields:
        raise ValueError("several runs need a {run} placeholder in the checkpoint pattern")
    if setting == 2 and "group" not in fields:
        results.note(
            "setting 2 without {group} in the checkpoint pattern: one checkpoint is used for "
            "every organ (it must have been trained without the slices of all test classes)"
        )
    all_folds = paper_folds(spec)
    chosen = [all_folds[f] for f in (range(len(all_folds)) if folds is None else folds)]
    if not adnet_checkpoints:
        results.note("no --adnet-checkpoint given: the ADNet row of Table 1 is omitted")
    do_mc = multiclass and setting == 1
    if multiclass and setting != 1:
        results.note("Table 2 (multi-class) is defined for setting 1 only; not run")
    if do_mc and not mf_checkpoints:
        results.note("no --mf-checkpoints given: the MF-trained rows of Table 2 are omitted")
    if do_mc and not adnet_checkpoints:
        results.note("ADNet++ max rule computed on the single-foreground TPM checkpoint")
    results.meta.update(
        {
            "mode": "paper",
            "dataset": spec.name,
            "title": spec.title,
            "setting": setting,
            "protocol": options.protocol,
            "prototypes": list(options.prototypes),
            "runs": list(runs),
            "folds": [f.index for f in chosen],
            "checkpoints": checkpoints,
            "adnet_checkpoints": adnet_checkpoints,
            "mf_checkpoints": mf_checkpoints,
            "classes": dict(spec.classes),
            "volumes": [c.name for c in cases],
            "prior_grid": [float(p) for p in options.prior_grid],
        }
    )
    # checkpoints trained with --head dspnet|mper score with their head (head_session.py)
    factory = session_factory or head_session_factory(options)
    made_by = None if options.product is None else head_session_factory(product_options(options))
    adnet_opts = with_prototypes(options, (1,))
    units = [len(f.volumes) if do_mc else len(f.queries) for f in chosen]
    total, done = sum(units) * len(runs), 0
    cache = CaseCache(size=8)
    for run in runs:
        for fold in chosen:
            sessions = Sessions(factory)  # new models per fold; features cached per volume
            products = Sessions(made_by) if made_by else None  # the product's own options

            def path(pattern: str, group: str = "", fold=fold, run=run) -> str:
                return checkpoint_path(
                    pattern, fold=fold.index, run=run, setting=setting, group=group
                )

            base = {"dataset": spec.name, "setting": setting, "run": int(run), "fold": fold.index}
            support = cache.get(cases[fold.support])
            order = fold.volumes if do_mc else fold.queries
            for qi in sorted(order):
                query = cache.get(cases[qi])
                # ---- Table 1: binary, the query against the fold's support volume
                if qi in fold.queries:
                    binary = [("TPM", checkpoints, options)]
                    if adnet_checkpoints:
                        binary.append(("ADNet", adnet_checkpoints, adnet_opts))
                    for model, pattern, opts in binary:
                        for organ, value in spec.classes.items():
                            if not shows(query, value) or not shows(support, value):
                                results.note(
                                    f"fold {fold.index}: {organ} absent from {query.name} or "
                                    f"{support.name}; that pair is not evaluated"
                                )
                                continue
                            group = spec.class_groups.get(organ, "") if setting == 2 else ""
                            ckpt = path(pattern, group)
                            meta = {**base, "model": model, "checkpoint": ckpt, "organ": organ}
                            meta["head"] = head_name(sessions(ckpt).model)
                            if meta["head"] != "tpm":
                                results.note(
                                    f"{ckpt} scores with its compared {meta['head']} head "
                                    "(train --head): its rows are that head, not TPM"
                                )
                            made = products(ckpt) if products and model == "TPM" else None
                            results.records.extend(
                                evaluate_binary(
                                    sessions(ckpt), query, support, value, opts, meta, made
                                )
                            )
                # ---- Table 2: multi-class, every other fold volume as the support
                if do_mc:
                    rule = path(adnet_checkpoints) if adnet_checkpoints else path(checkpoints)
                    jobs = multiclass_jobs(
                        path(checkpoints), rule, path(mf_checkpoints) if mf_checkpoints else None
                    )
                    for si in sorted(fold.volumes):
                        if si == qi:
                            continue
                        sup = cache.get(cases[si])
                        if not any(shows(sup, v) for v in spec.classes.values()):
                            continue
                        for ckpt, model, with_rule in jobs:
                            # the same rng per (query, support): every model gets the same slice
                            meta = {**base, "model": model or "ADNet++", "checkpoint": ckpt}
                            results.records.extend(
                                evaluate_multiclass(
                                    sessions(ckpt),
                                    query,
                                    sup,
                                    spec.classes,
                                    options,
                                    pair_rng(options.seed, run, qi, si),
                                    max_rule=with_rule,
                                    tpm=model is not None,
                                    meta=meta,
                                    product=products(ckpt) if products and model else None,
                                )
                            )
                done += 1
                yield Progress(done, total, f"run {run} fold {fold.index} {query.name}")


__all__ = ["run_paper"]
