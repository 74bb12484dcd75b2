"""Run the protocols: one query volume at a time through a :class:`SegmentationSession`.

Per query volume and structure the session segments once (the encoder runs once per volume and
model; more prototypes or another prior reuse the cached features and scores), and every prior
is then a threshold on the cached log-odds ``s``: the label at prior p is ``s > -logit(p)``.
So one segmentation yields every row of the paper's Table 1 for that volume:

* CE-T: p = 0.5 (the learned threshold; for a model without one, the session's self-calibration
  on the support slice);
* AvgEst / LinEst: the checkpoint's estimators (``model.estimators["sp" | "mp" | "multiclass"]``),
  LinEst from the support's painted fraction and slice location; "n/a" when the checkpoint has
  none (the training-free filter bank);
* OCP: per query slice, the threshold that predicts exactly the slice's true foreground count
  (the oracle; an upper bound, not a method);
* a Dice-vs-prior curve on a fixed grid of priors, and the single best-count prior of the whole
  volume (its ICP), for the figure.

Records are plain dicts (JSON-ready) so tables, figures and per-volume files are views of them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_tpm.progress import Progress
from napari_tpm.session import SegmentationSession
from napari_tpm.tpm import (
    AvgEst,
    LinEst,
    adnetpp_posterior,
    score_threshold,
    squared_distance,
)

from . import _internals as internals
from .datasets import Case, DatasetSpec, LoadedCase
from .metrics import default_prior_grid, dice, dice_curve, fraction_mse, prior_thresholds
from .protocols import (
    MAX_RULE,
    METHODS,
    checkpoint_path,
    ep1_query_chunks,
    ep1_support_slices,
    labelled_slices,
    middle_labelled_slice,
    most_labels_slice,
    paint_slice,
    paper_folds,
    pattern_fields,
    round_robin_support,
)


@dataclass
class Options:
    """What to evaluate; shared by the generic and the paper mode."""

    protocol: str = "EP2"
    prototypes: tuple[int, ...] = (1, 5)
    n_shot: int = 3
    modality: str = "auto"
    device: str = "auto"
    batch_size: int | None = None
    prior_grid: np.ndarray = field(default_factory=default_prior_grid)
    seed: int = 0

    def __post_init__(self) -> None:
        self.protocol = self.protocol.upper()
        if self.protocol not in ("EP1", "EP2"):
            raise ValueError(f"protocol must be EP1 or EP2, got {self.protocol!r}")
        if not self.prototypes or any(int(k) < 1 for k in self.prototypes):
            raise ValueError(f"prototype counts must be >= 1, got {self.prototypes}")
        self.prototypes = tuple(dict.fromkeys(int(k) for k in self.prototypes))


@dataclass
class Results:
    """Everything a run produced: per-volume records, notes for the reader, run metadata."""

    records: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


# --------------------------------------------------------------------------- helpers
def drain(progress: Iterator[Progress]) -> None:
    for _ in progress:
        pass


def _estimators(session: SegmentationSession, key: str) -> dict[str, Any]:
    return (session.model.estimators or {}).get(key) or {}


def estimator_priors(
    session: SegmentationSession, key: str, size: float, loc: float
) -> dict[str, float | None]:
    """AvgEst and LinEst priors for the current support, None where the checkpoint has none.

    ``key`` is "sp" (one prototype), "mp" (several) or "multiclass", the same keys the session's
    ``auto_prior`` reads.
    """
    entry = _estimators(session, key)
    avg = AvgEst.from_dict(entry["avgest"]).predict() if "avgest" in entry else None
    lin = LinEst.from_dict(entry["linest"]).predict(size, loc) if "linest" in entry else None
    return {"AvgEst": avg, "LinEst": None if lin is None else float(lin)}


def count_threshold(values: np.ndarray, n: int) -> float:
    """``tpm.score_threshold``: exactly ``n`` of ``values`` lie above it (midpoint of ranks).

    The threshold depends only on the ``n + 1`` largest values (two at least) unless every
    value is foreground, so those are selected first in linear time: a full sort of a
    768 x 768 slice per slice and per rule would dominate the evaluation.
    """
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    n = int(n)
    keep = max(n + 1, 2)
    if n < flat.size and keep < flat.size:
        flat = np.partition(flat, flat.size - keep)[flat.size - keep :]
    return float(score_threshold(torch.from_numpy(np.ascontiguousarray(flat)), n))


def oracle_thresholds(scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per slice i, the score threshold that exactly ``counts[i]`` voxels of the slice exceed."""
    return np.asarray([count_threshold(scores[i], n) for i, n in enumerate(counts)])


def _sigmoid_neg(tau: np.ndarray | float) -> np.ndarray | float:
    """The prior whose threshold is ``tau``: sigmoid(-tau)."""
    return 1.0 / (1.0 + np.exp(np.asarray(tau, dtype=np.float64)))


def _clean(x: float | None, digits: int = 6) -> float | None:
    if x is None or not math.isfinite(float(x)):
        return None
    return round(float(x), digits)


def _pair_rng(seed: int, run: int, query: int, support: int) -> np.random.Generator:
    """The random source for one (query, support) pair: the same for every model compared."""
    return np.random.default_rng([seed, run, query, support])


class _CaseCache:
    """The last few loaded cases, so a support used by several queries is read once."""

    def __init__(self, size: int = 3) -> None:
        self._items: OrderedDict[str, LoadedCase] = OrderedDict()
        self._size = size

    def get(self, case: Case) -> LoadedCase:
        if case.name in self._items:
            self._items.move_to_end(case.name)
            return self._items[case.name]
        loaded = case.load()
        self._items[case.name] = loaded
        while len(self._items) > self._size:
            self._items.popitem(last=False)
        return loaded


# ---------------------------------------------------------------------- binary (Table 1)
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


def evaluate_binary(
    session: SegmentationSession,
    query: LoadedCase,
    support: LoadedCase | None,
    value: int,
    options: Options,
    meta: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every prior rule and prototype count for one structure in one query volume.

    Args:
        session: a session holding the model to evaluate (its image is replaced).
        query: the query volume; its labels are the truth (``labels == value``).
        support: the volume the support slice is painted on; None = the query itself.
        value: the structure's label value.
        options: protocol, prototype counts, prior grid.
        meta: fields copied into every record (dataset, fold, run, model...).

    Returns:
        One record per prototype count.
    """
    meta = dict(meta or {})
    truth_full = query.labels == value
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

    n_k = len(options.prototypes)
    scores = [np.empty(truth.shape, np.float32) for _ in range(n_k)]
    est_tau = {m: [np.zeros(len(kept)) for _ in range(n_k)] for m in ("AvgEst", "LinEst")}
    est_prior: dict[str, list[list[float | None]]] = {
        m: [[] for _ in range(n_k)] for m in ("AvgEst", "LinEst")
    }
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
            size, loc = internals.support_fraction(session), internals.support_location(session)
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
                "dice": _clean(dice(pred, truth)),
                "n_pred": int(np.count_nonzero(pred)),
                "fraction_mse": _clean(fraction_mse(pred, truth), 9),
                "available": True,
            }
            if m == "OCP":
                entry["prior"] = None
                entry["slice_priors"] = [_clean(p) for p in _sigmoid_neg(tau)]
                entry["slice_counts_match"] = bool(
                    np.array_equal(pred.reshape(len(kept), -1).sum(1), counts)
                )
            elif m == "CE-T":
                entry["prior"] = 0.5
            else:
                ps = est_prior[m][ki]
                entry["prior"] = _clean(ps[0]) if len(ps) == 1 else [_clean(p) for p in ps]
            methods[m] = entry
        icp = float(_sigmoid_neg(count_threshold(sc, int(truth.sum()))))
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
                "icp": _clean(icp, 9),
                "dice_icp": _clean(dice_icp),
                "curve": [_clean(d, 5) for d in dice_curve(sc, truth, options.prior_grid)],
            }
        )
    return records


# ------------------------------------------------------------------ multi-class (Table 2)
def adnetpp_labels(session: SegmentationSession, batch: int = 8) -> np.ndarray:
    """ADNet++'s max-rule labels (0 background, else the paint's label values) for the query.

    Per class a binary posterior ``h_F,k / (h_F,k + h_B,k)``, background ``1 - max_k p_k``, a
    softmax over them, upsampled to the native grid, argmax (tpm-method.md §9). It reads the
    session's cached features and class prototypes, so it costs no encoder call. For a model
    without a learned threshold the session's self-calibration offset is applied as the prior
    (0.5 for trained checkpoints, as in the paper).
    """
    protos = internals.class_prototypes(session)
    if any(m.shape[0] != 1 for m, _ in protos):
        raise ValueError("the max rule is defined for one prototype per class")
    means = torch.cat([m for m, _ in protos]).float()
    feats = internals.query_features(session)
    grid = internals.query_grid(session)
    model = session.model
    prior = float(_sigmoid_neg(-internals.score_offset(session)))
    n = feats.shape[0]
    out = np.zeros((n, *grid.shape_hw), dtype=np.uint8)
    for lo in range(0, n, batch):
        d2 = squared_distance(feats[lo : lo + batch].float(), means)
        post = adnetpp_posterior(d2, model.sigma_f, model.sigma_b, prior=prior)
        out[lo : lo + batch] = grid.from_working(post).argmax(1).to(torch.uint8).numpy()
    lut = np.asarray([0, *session.label_values])
    return np.moveaxis(lut[out], 0, session.axis)


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
) -> list[dict[str, Any]]:
    """All classes jointly from the support slice with the most labels; per-class 3D Dice.

    Returns one record for the TPM rules (CE-T, AvgEst, LinEst, OCP) when ``tpm``, and one for
    the ADNet++ max rule when ``max_rule``. Classes absent from the support slice cannot be
    predicted and score 0 wherever the query has them.
    """
    meta = dict(meta or {})
    src = query if support is None else support
    values = list(classes.values())
    z = most_labels_slice(src.labels, values, rng)
    paint = paint_slice(src.labels, z, values)
    painted = sorted(int(v) for v in np.unique(paint) if v)
    session.set_image(query.image, query.spacing, modality=options.modality)
    drain(
        session.segment(
            paint,
            support_image=None if support is None else support.image,
            support_spacing=None if support is None else support.spacing,
            n_prototypes=1,
        )
    )
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
        return {name: _clean(dice(pred == v, truth == v)) for name, v in classes.items()}

    records = []
    if tpm:
        sc = session.scores()
        lut = np.asarray([0, *session.label_values])[1:]
        best = lut[internals.best_class_index(session)]
        fg_truth = np.isin(truth, painted)
        counts = fg_truth.reshape(truth.shape[0], -1).sum(axis=1)
        size, loc = internals.support_fraction(session), internals.support_location(session)
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


# ------------------------------------------------------------------------------ drivers
SessionFactory = Callable[[str], SegmentationSession]


def default_session_factory(options: Options) -> SessionFactory:
    def make(checkpoint: str) -> SegmentationSession:
        return SegmentationSession(checkpoint, options.device, batch_size=options.batch_size)

    return make


class _Sessions:
    """One session per checkpoint, created on first use.

    The drivers loop over query volumes on the outside, so every table that uses the same
    checkpoint (Table 1, the ADNet row when it is that checkpoint, Table 2) reads the same
    cached features: each query volume goes through each distinct encoder once.
    """

    def __init__(self, factory: SessionFactory) -> None:
        self._factory = factory
        self._items: dict[str, SegmentationSession] = {}

    def __call__(self, checkpoint: str) -> SegmentationSession:
        if checkpoint not in self._items:
            self._items[checkpoint] = self._factory(checkpoint)
        return self._items[checkpoint]


def _with_prototypes(options: Options, prototypes: tuple[int, ...]) -> Options:
    return Options(**{**options.__dict__, "prototypes": prototypes})


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
    sessions = _Sessions(session_factory or default_session_factory(options))
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
    cache = _CaseCache()
    presence = _presence(cases, classes, cache)
    adnet_opts = _with_prototypes(options, (1,))
    for qi, case in enumerate(cases):
        query = cache.get(case)
        base = {"run": 1, "fold": 0}
        binary = [("TPM", checkpoint, options)]
        if adnet_checkpoint:
            binary.append(("ADNet", adnet_checkpoint, adnet_opts))
        for model, ckpt, opts in binary:
            meta = {**base, "model": model, "checkpoint": str(ckpt)}
            _generic_binary(
                sessions(ckpt), cases, qi, query, classes, presence, support, opts, meta,
                results, cache,
            )  # fmt: skip
        if multiclass:
            for ckpt, model, rule in _multiclass_jobs(
                checkpoint, adnet_checkpoint or checkpoint, mf_checkpoint
            ):
                meta = {**base, "model": model or "ADNet++", "checkpoint": str(ckpt)}
                _generic_multiclass(
                    sessions(ckpt), cases, qi, query, classes, presence, support, options, meta,
                    results, cache, tpm=model is not None, rule=rule,
                )  # fmt: skip
        yield Progress(qi + 1, len(cases), case.name)


def _presence(cases: Sequence[Case], classes: dict[str, int], cache: _CaseCache) -> np.ndarray:
    """present[i, j]: volume i shows class j (read once, up front)."""
    out = np.zeros((len(cases), len(classes)), bool)
    for i, case in enumerate(cases):
        labels = cache.get(case).labels
        out[i] = [bool((labels == v).any()) for v in classes.values()]
    return out


def _generic_binary(
    session, cases, qi, query, classes, presence, support, options, meta, results, cache
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
            evaluate_binary(session, query, sup, value, options, {**meta, "organ": organ})
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
            _pair_rng(options.seed, 1, qi, si),
            max_rule=rule,
            tpm=tpm,
            meta=meta,
        )
    )


def _shows(case: LoadedCase, value: int) -> bool:
    return bool((case.labels == value).any())


def _multiclass_jobs(sf: str, rule: str, mf: str | None) -> list[tuple[str, str | None, bool]]:
    """(checkpoint, TPM row model or None, also the max rule?) per multi-class segmentation.

    When the max rule runs on the single-foreground checkpoint itself, one segmentation gives
    both rows (the rule reads the same cached features and prototypes).
    """
    jobs: list[tuple[str, str | None, bool]] = []
    if rule == sf:
        jobs.append((sf, "SF", True))
    else:
        jobs += [(sf, "SF", False), (rule, None, True)]
    if mf:
        jobs.append((mf, "MF", False))
    return jobs


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
    factory = session_factory or default_session_factory(options)
    adnet_opts = _with_prototypes(options, (1,))
    units = [len(f.volumes) if do_mc else len(f.queries) for f in chosen]
    total, done = sum(units) * len(runs), 0
    cache = _CaseCache(size=8)
    for run in runs:
        for fold in chosen:
            sessions = _Sessions(factory)  # new models per fold; features cached per volume

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
                            if not _shows(query, value) or not _shows(support, value):
                                results.note(
                                    f"fold {fold.index}: {organ} absent from {query.name} or "
                                    f"{support.name}; that pair is not evaluated"
                                )
                                continue
                            group = spec.class_groups.get(organ, "") if setting == 2 else ""
                            ckpt = path(pattern, group)
                            meta = {**base, "model": model, "checkpoint": ckpt, "organ": organ}
                            results.records.extend(
                                evaluate_binary(sessions(ckpt), query, support, value, opts, meta)
                            )
                # ---- Table 2: multi-class, every other fold volume as the support
                if do_mc:
                    rule = path(adnet_checkpoints) if adnet_checkpoints else path(checkpoints)
                    jobs = _multiclass_jobs(
                        path(checkpoints), rule, path(mf_checkpoints) if mf_checkpoints else None
                    )
                    for si in sorted(fold.volumes):
                        if si == qi:
                            continue
                        sup = cache.get(cases[si])
                        if not any(_shows(sup, v) for v in spec.classes.values()):
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
                                    _pair_rng(options.seed, run, qi, si),
                                    max_rule=with_rule,
                                    tpm=model is not None,
                                    meta=meta,
                                )
                            )
                done += 1
                yield Progress(done, total, f"run {run} fold {fold.index} {query.name}")


__all__ = [
    "MAX_RULE",
    "METHODS",
    "Options",
    "Results",
    "adnetpp_labels",
    "count_threshold",
    "drain",
    "estimator_priors",
    "evaluate_binary",
    "evaluate_multiclass",
    "oracle_thresholds",
    "run_generic",
    "run_paper",
]
