"""The hybrid encoder: it starts as the filter bank and learns only on top of it."""

from __future__ import annotations

import pytest
import torch

from napari_tpm.encoders import build_encoder
from napari_tpm.encoders.hybrid import HybridEncoder


def test_untrained_hybrid_equals_the_filter_bank_then_learns_away_from_it(one_torch_thread):
    torch.manual_seed(0)
    hybrid, bank = HybridEncoder(width=16, learned_channels=4), build_encoder("filterbank")
    x = torch.randn(2, 1, 40, 36)
    with torch.no_grad():
        a, b = hybrid(x), bank(x)
    assert a.shape == (2, bank.out_channels + 4, 10, 9)
    torch.testing.assert_close(a[:, : bank.out_channels], b)  # same unit vectors and distances
    assert torch.count_nonzero(a[:, bank.out_channels :]) == 0

    opt = torch.optim.SGD(hybrid.parameters(), lr=0.1)
    for _ in range(2):
        loss = -hybrid(x)[:, -1].mean()  # any objective that needs the learned channels
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert hybrid(x)[:, -1].abs().max() > 0
    # the bank has no parameters: everything trainable is the learned branch
    assert all(not n.startswith("bank.") for n, _ in hybrid.named_parameters())


def test_hybrid_config_round_trips_and_rejects_other_strides():
    enc = build_encoder({"name": "hybrid", "width": 16, "learned_channels": 8, "dilations": [1, 2]})
    assert build_encoder(enc.config()).config() == enc.config()
    with pytest.raises(ValueError, match="stride-4"):
        HybridEncoder(filterbank={"stride": 8})
