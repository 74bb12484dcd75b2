"""The hybrid encoder: it starts close to the filter bank and learns on top of it."""

from __future__ import annotations

import pytest
import torch

from napari_tpm.encoders import build_encoder
from napari_tpm.encoders.hybrid import HybridEncoder


def test_untrained_hybrid_is_the_bank_plus_small_learned_channels_that_train(
    one_torch_thread,
):
    torch.manual_seed(0)
    hybrid, bank = HybridEncoder(width=16, learned_channels=4), build_encoder("filterbank")
    x = torch.randn(2, 1, 40, 36)
    with torch.no_grad():
        a, b = hybrid(x), bank(x)
    assert a.shape == (2, bank.out_channels + 4, 10, 9)
    # the bank's directions, and only a few percent of the norm in the learned channels
    fixed, learned = a[:, : bank.out_channels], a[:, bank.out_channels :]
    cos = (fixed * b).sum(1) / fixed.norm(dim=1)
    assert cos.min() > 0.9999
    assert 0 < learned.norm(dim=1).max() < 0.3

    # a TPM-like objective: cosine of each pixel to the image's mean feature (a prototype).
    # With an all-zero head this gradient would vanish along the learned channels.
    def loss_of(out):
        proto = out.mean((2, 3), keepdim=True)
        return -(out * proto).sum(1).mean()

    before = hybrid.head.weight.detach().clone()
    opt = torch.optim.SGD(hybrid.parameters(), lr=0.1)
    for _ in range(2):
        loss = loss_of(hybrid(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(hybrid.head.weight, before)
    # the bank has no parameters: everything trainable is the learned branch
    assert all(not n.startswith("bank.") for n, _ in hybrid.named_parameters())


def test_hybrid_config_round_trips_and_rejects_other_strides():
    enc = build_encoder({"name": "hybrid", "width": 16, "learned_channels": 8, "dilations": [1, 2]})
    assert build_encoder(enc.config()).config() == enc.config()
    with pytest.raises(ValueError, match="stride-4"):
        HybridEncoder(filterbank={"stride": 8})


def test_adaptation_trains_only_the_hybrids_head_and_last_block(one_torch_thread):
    from napari_tpm.phantom import make_phantom_dataset
    from napari_tpm.train.setup import new_model
    from napari_tpm.train.trainer import TrainConfig, train_steps
    from napari_tpm.train.volumes import volume_from_array

    p = make_phantom_dataset(1, shape=(10, 48, 48), seed=3)[0]
    volumes = [volume_from_array(p.image, p.spacing, name="p", size=48, min_size=60)]
    config = TrainConfig(
        encoder="hybrid", steps=2, trainable="last", min_support_px=25, device="cpu", seed=0
    )
    torch.manual_seed(0)
    model = new_model(config)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    list(train_steps(model, volumes, config))
    after = model.encoder.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    last = len(model.encoder.blocks) - 1
    assert changed
    assert all(k.startswith(("head.", f"blocks.{last}.")) for k in changed), changed


def test_adapting_a_robust_hybrid_uses_its_own_intensity_map(one_torch_thread, monkeypatch):
    from napari_tpm import adapt as adapt_module
    from napari_tpm.phantom import make_phantom_dataset
    from napari_tpm.train import volumes as volumes_module
    from napari_tpm.train.setup import new_model
    from napari_tpm.train.trainer import TrainConfig

    seen = []
    real = volumes_module.volume_from_array

    def spy(*args, **kwargs):
        seen.append(kwargs.get("normalisation"))
        return real(*args, **kwargs)

    monkeypatch.setattr(volumes_module, "volume_from_array", spy)
    torch.manual_seed(0)
    model = new_model(TrainConfig(encoder="hybrid", normalisation="robust"))
    p = make_phantom_dataset(1, shape=(10, 48, 48), seed=4)[0]
    run = adapt_module.adapt(
        model, [(p.image, p.spacing)], steps=1, size=48, min_size=60, device="cpu",
        analysis_episodes=0, config={"min_support_px": 25},
    )  # fmt: skip
    try:
        while True:
            next(run)
    except StopIteration as stop:
        adapted = stop.value
    assert seen == ["robust"]
    assert adapted.normalisation == "robust"
