"""Every shipped model loads safely and segments through the session and the CLI's loader."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tpm.checkpoints import list_models, load_model
from napari_tpm.phantom import make_phantom
from napari_tpm.session import SegmentationSession


@pytest.mark.parametrize("name", list_models())
def test_zoo_model_segments_a_phantom(name):
    model = load_model(name)
    assert model.encoder.stride in (4, 8)
    ph = make_phantom(shape=(8, 64, 64), seed=2)
    z = int(np.argmax((ph.labels == 5).sum(axis=(1, 2))))
    paint = np.zeros(ph.labels.shape, np.uint8)
    paint[z][ph.labels[z] == 5] = 5
    session = SegmentationSession(model, device="cpu")
    session.set_image(ph.image, ph.spacing)
    for _ in session.segment(paint):
        pass
    prior = session.auto_prior()
    assert 0 < prior < 1
    if model.calibrated and model.estimators:
        assert prior != 0.5  # trained statistics drive "auto"
    result = session.labels(prior)
    assert result.shape == ph.labels.shape
    assert (result[z] == 5).any()
