"""Training objective: prototypes, posteriors, alignment and the threshold parameter."""

from __future__ import annotations

import pytest
import torch

from napari_tpm.encoders import build_encoder
from napari_tpm.tpm import THETA_INIT, masked_average, posterior_working, squared_distance
from napari_tpm.train.losses import (
    EpisodeModel,
    alignment_loss,
    class_prototypes,
    episode_probabilities,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_class_prototypes_match_masked_average_per_class():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 8, 4, 4, generator=g)
    masks = (torch.rand(3, 32, 32, generator=g) > 0.6).float()
    protos = class_prototypes(feats, masks)
    assert protos.shape == (1, 3, 8)
    for k in range(3):
        torch.testing.assert_close(protos[0, k], masked_average(feats, masks[k : k + 1])[0])


def test_binary_probabilities_are_the_working_form_upsampled():
    d2 = torch.rand(1, 1, 4, 4) * 2
    t_d = torch.tensor(0.9)
    probs = episode_probabilities(d2, t_d, (4, 4))
    torch.testing.assert_close(probs[:, 1], posterior_working(d2[:, 0], t_d))
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 4, 4))


def test_multiclass_probabilities_sum_to_one_and_favour_the_nearest_class():
    d2 = torch.full((1, 3, 4, 4), 3.0)
    d2[0, 1, :2] = 0.1  # class 2 near in the top half
    probs = episode_probabilities(d2, torch.tensor(1.0), (8, 8))
    assert probs.shape == (1, 4, 8, 8)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 8, 8))
    assert int(probs[0, :, 0, 0].argmax()) == 2 and int(probs[0, :, 7, 7].argmax()) == 0


def test_alignment_is_skipped_without_predicted_foreground():
    feats = torch.nn.functional.normalize(torch.randn(1, 8, 4, 4), dim=1)
    probs = torch.zeros(1, 2, 16, 16)
    probs[:, 0] = 1.0
    label = torch.zeros(16, 16, dtype=torch.long)
    assert alignment_loss(feats, feats, probs, label, torch.tensor(1.0)) is None
    probs[:, 1, 4:8, 4:8], probs[:, 0, 4:8, 4:8] = 1.0, 0.0
    label[4:8, 4:8] = 1
    loss = alignment_loss(feats, feats, probs, label, torch.tensor(1.0))
    assert loss is not None and torch.isfinite(loss)


def _batch(k: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    masks = torch.zeros(1, 2, 32, 32)
    masks[0, 0, 8:20, 8:20] = 1
    masks[0, 1, 22:30, 4:14] = 1
    label = torch.zeros(1, 32, 32, dtype=torch.long)
    label[0, 9:21, 9:21] = 1
    if k > 1:
        label[0, 22:30, 5:15] = 2
    return {
        "support": torch.randn(1, 1, 32, 32, generator=g),
        "query": torch.randn(1, 1, 32, 32, generator=g),
        "support_masks": masks,
        "query_label": label,
        "n_classes": torch.tensor([k]),
    }


def test_theta_gets_a_gradient_and_the_t_loss_only_in_adnet_mode():
    for k in (1, 2):
        tpm = EpisodeModel(build_encoder("resnet18-l3"), THETA_INIT, t_loss_weight=0.0)
        out = tpm(_batch(k))
        out["loss"].backward()
        assert tpm.theta.grad is not None and float(tpm.theta.grad) != 0.0
        torch.testing.assert_close(out["loss"], out["seg"] + out["align"], atol=1e-6, rtol=0)
    adnet = EpisodeModel(build_encoder("resnet18-l3"), THETA_INIT, t_loss_weight=1.0)
    out = adnet(_batch())
    torch.testing.assert_close(out["loss"], out["seg"] + out["align"] + out["t_loss"])
    assert float(out["T"]) == pytest.approx(-10.0, abs=1e-4)


def test_query_idt_is_recorded_per_episode():
    model = EpisodeModel(build_encoder("resnet18-l3"), THETA_INIT)
    out = model(_batch())
    assert len(out["idt"]) == 1 and 0.0 < out["idt"][0] < 2**0.5
    fq = model.encoder(_batch()["query"])
    assert squared_distance(fq, torch.ones(1, fq.shape[1])).shape == (1, 1, 4, 4)
