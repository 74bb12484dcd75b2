"""AvgEst / LinEst: fitting, prediction, clipping, and checkpoint-safe serialisation."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from napari_tpm.tpm import PRIOR_CLIP, AvgEst, LinEst, clip_prior, estimator_from_dict


def _weights_only_round_trip(data: dict) -> dict:
    """What a checkpoint does: torch.save, then torch.load(weights_only=True)."""
    buffer = io.BytesIO()
    torch.save({"estimators": data}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)["estimators"]


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_avgest_is_the_nan_ignoring_mean():
    est = AvgEst().fit([0.2, math.nan, 0.4, 0.3])
    assert est.predict() == pytest.approx(0.3)
    assert est.predict(size=0.1, loc=0.9) == pytest.approx(0.3)  # same call as LinEst
    assert est.n == 3
    with pytest.raises(ValueError, match="not NaN"):
        AvgEst().fit([math.nan, math.nan])
    with pytest.raises(ValueError, match="not fitted"):
        AvgEst().predict()
    assert AvgEst().fit([0.0, 0.0]).predict() == PRIOR_CLIP[0]


def test_linest_recovers_the_generating_coefficients():
    rng = np.random.default_rng(0)
    size = rng.uniform(0.001, 0.2, 200)
    loc = rng.uniform(0.0, 1.0, 200)
    b0, b1, b2 = -3.0, -4.0, 12.0
    icp = _sigmoid(b0 + b1 * (loc - 0.5) ** 2 + b2 * size)
    icp[5] = math.nan  # a record without foreground is skipped
    est = LinEst().fit(icp, size, loc)
    assert (est.b0, est.b1, est.b2) == pytest.approx((b0, b1, b2), rel=1e-9)
    assert est.n == 199
    assert est.predict(0.05, 0.3) == pytest.approx(_sigmoid(b0 + b1 * 0.04 + b2 * 0.05))
    many = est.predict(np.array([0.05, 0.1]), np.array([0.3, 0.5]))
    assert isinstance(many, np.ndarray) and many.shape == (2,)


def test_linest_fits_the_clipped_logit_and_clips_predictions():
    size = np.array([0.0, 0.1, 0.2, 0.3])
    loc = np.array([0.5, 0.2, 0.8, 0.5])
    icp = np.array([0.0, 1.0, 0.5, 1e-9])  # ends are clipped before the logit
    est = LinEst().fit(icp, size, loc)
    design = np.stack([np.ones(4), (loc - 0.5) ** 2, size], 1)
    target = np.log(np.clip(icp, *PRIOR_CLIP)) - np.log1p(-np.clip(icp, *PRIOR_CLIP))
    expected, *_ = np.linalg.lstsq(design, target, rcond=None)
    np.testing.assert_allclose([est.b0, est.b1, est.b2], expected, rtol=1e-10)
    extreme = LinEst(b0=50.0, b1=0.0, b2=0.0, n=3)
    assert extreme.predict(0.1, 0.5) == PRIOR_CLIP[1]
    assert LinEst(b0=-50.0, b1=0.0, b2=0.0, n=3).predict(0.1, 0.5) == PRIOR_CLIP[0]


def test_linest_needs_three_records():
    with pytest.raises(ValueError, match="at least 3"):
        LinEst().fit([0.1, math.nan, 0.2], [0.1, 0.2, 0.3], [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="same length"):
        LinEst().fit([0.1, 0.2, 0.3], [0.1, 0.2], [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="not fitted"):
        LinEst().predict(0.1, 0.5)


def test_estimators_survive_a_weights_only_checkpoint():
    avg = AvgEst().fit([0.1, 0.2])
    rng = np.random.default_rng(1)
    lin = LinEst().fit(rng.uniform(0.01, 0.3, 10), rng.uniform(0, 0.2, 10), rng.uniform(0, 1, 10))
    loaded = _weights_only_round_trip({"avg": avg.to_dict(), "lin": lin.to_dict()})
    for value in [*loaded["avg"].values(), *loaded["lin"].values()]:
        assert type(value) in (float, int, str)
    avg2 = estimator_from_dict(loaded["avg"])
    lin2 = estimator_from_dict(loaded["lin"])
    assert isinstance(avg2, AvgEst) and avg2 == avg
    assert isinstance(lin2, LinEst) and lin2 == lin
    assert lin2.predict(0.07, 0.2) == lin.predict(0.07, 0.2)
    with pytest.raises(ValueError, match="unknown estimator kind"):
        estimator_from_dict({"kind": "cubic"})


def test_clip_prior_handles_scalars_and_arrays():
    assert clip_prior(0.0) == PRIOR_CLIP[0] and clip_prior(0.5) == 0.5
    np.testing.assert_array_equal(clip_prior(np.array([0.0, 1.0])), np.array(PRIOR_CLIP))
