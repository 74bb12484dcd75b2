"""The compared heads (DSPNet-style, MPER-style): shapes, gradients, training, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

# the phantom training volumes and the small run settings of the training-loop tests
from test_evaluate_cli import chaos_like  # noqa: F401
from test_train_cli import data_dir  # noqa: F401
from test_train_loop import SMALL, volumes  # noqa: F401

from napari_tpm.checkpoints import CheckpointError, load_model, save_model
from napari_tpm.evaluate.__main__ import main as evaluate_main
from napari_tpm.evaluate.head_session import HeadSession, head_name
from napari_tpm.session import SegmentationSession
from napari_tpm.tpm.heads import build_head, consistency_loss
from napari_tpm.train.__main__ import main
from napari_tpm.train.setup import new_model
from napari_tpm.train.trainer import TrainConfig, train_steps

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEADS = ("dspnet", "mper")


def _episode(c: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    fs = torch.randn(1, c, 8, 8, generator=gen)
    fq = torch.randn(2, c, 8, 8, generator=gen)
    mask = torch.zeros(32, 32)
    mask[8:20, 10:24] = 1
    fs[..., 2:5, 2:6] += 3 * torch.arange(c, dtype=torch.float32)[None, :, None, None] / c
    return fs, mask, fq


@pytest.mark.parametrize("kind", HEADS)
def test_heads_give_log_odds_and_gradients_reach_features_and_weights(kind):
    head = build_head(kind, 8)
    fs, mask, fq = _episode()
    fs.requires_grad_(True)
    fq.requires_grad_(True)
    out = head(fs, mask, fq)
    assert out.shape == (2, 8, 8) and torch.isfinite(out).all()
    outputs, aux = head.train_outputs(fs, mask, fq)
    loss = sum(o.square().mean() for o in outputs) + (0 if aux is None else aux)
    loss.backward()
    assert fs.grad.abs().sum() > 0 and fq.grad.abs().sum() > 0
    grads = {n: p.grad for n, p in head.named_parameters()}
    assert grads and all(g is not None for g in grads.values())
    assert any(float(g.abs().sum()) > 0 for g in grads.values())


def test_the_support_foreground_scores_above_its_background():
    fs, mask, _ = _episode()
    for kind in HEADS:
        head = build_head(kind, 8)
        with torch.no_grad():
            s = head(fs, mask, fs)[0]
        cells = torch.nn.functional.adaptive_avg_pool2d(mask[None, None], (8, 8))[0, 0]
        assert s[cells > 0.5].mean() > s[cells == 0].mean(), kind


def test_mper_starts_with_equal_branches_and_consistency_can_fail():
    head = build_head("mper", 8)
    fs, mask, fq = _episode()
    proto, lin = head.branches(head.prepare(fs, mask), fq)
    a = torch.tensor([[-3.0, 0.0, 2.0]])
    assert float(consistency_loss(a, a)) == 0.0
    assert float(consistency_loss(a, -a)) > 1.0
    assert float(consistency_loss(proto, lin)) > 0  # soft maximum over 3 vs one mean prototype
    with torch.no_grad():
        head.linear.weight.mul_(0.0)
    assert float(consistency_loss(*head.branches(head.prepare(fs, mask), fq))) > float(
        consistency_loss(proto, lin)
    )


def test_head_configs_are_checked():
    with pytest.raises(ValueError, match="unknown head"):
        build_head("alpnet", 8)
    with pytest.raises(ValueError, match="outside"):
        build_head({"kind": "mper", "channels": 10**6})
    with pytest.raises(ValueError, match="max_classes"):
        TrainConfig(head="mper", max_classes=3)


@pytest.mark.parametrize("kind", HEADS)
def test_two_training_steps_then_the_checkpoint_restores_the_head(kind, volumes, tmp_path):  # noqa: F811
    config = TrainConfig(steps=2, checkpoint_every=2, head=kind, **SMALL)
    torch.manual_seed(0)
    model = new_model(config)
    steps = list(train_steps(model, volumes, config, run_dir=tmp_path))
    assert len(steps) == 2 and all(np.isfinite(p.info["loss"]) for p in steps)
    assert model.head is not None and head_name(model) == kind
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert any(k.startswith("head.") for k in state["net"])
    loaded = load_model(tmp_path / "model.pt")
    assert head_name(loaded) == kind and loaded.head.config() == model.head.config()
    for (n, a), (_, b) in zip(model.head.state_dict().items(), loaded.head.state_dict().items()):
        torch.testing.assert_close(a, b, msg=n)
    half = save_model(loaded, tmp_path / "half.pt", half=True)
    assert head_name(load_model(half)) == kind


def test_a_tpm_checkpoint_has_no_head_and_a_broken_head_is_refused(volumes, tmp_path):  # noqa: F811
    config = TrainConfig(steps=1, checkpoint_every=1, **SMALL)
    model = new_model(config)
    list(train_steps(model, volumes, config, run_dir=tmp_path))
    assert load_model(tmp_path / "model.pt").head is None
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    payload["head"] = {"config": {"kind": "mper", "channels": 3}, "state_dict": {}}
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="scoring head"):
        load_model(tmp_path / "bad.pt")


def test_the_cli_trains_a_head_and_the_session_scores_with_it(data_dir, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    args = [
        str(data_dir), "--size", "40", "--sv-min-size", "40", "--min-support-px", "20",
        "--encoder", "resnet18-l3", "--device", "cpu", "--analysis-episodes", "5",
        "--steps", "2", "--quiet", "--threads", "1", "--head", "dspnet", "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    model = load_model(out / "model.pt")
    assert head_name(model) == "dspnet" and model.estimators == {}
    image = np.random.default_rng(0).normal(size=(6, 40, 40)).astype(np.float32)
    paint = np.zeros(image.shape, np.uint8)
    paint[3, 10:25, 12:28] = 1
    with pytest.raises(ValueError, match="evaluate paper"):  # never scored silently as TPM
        SegmentationSession(model, "cpu")
    session = HeadSession(model, "cpu")
    session.set_image(image, (1.0, 1.0, 1.0))
    for _ in session.segment(paint):
        pass
    state = session._head_state
    assert state is not None
    feats = session.features()[:1].float()
    expected = model.head.score(state, feats)
    low = session._low_scores(feats)
    torch.testing.assert_close(low[:, 0], expected)
    assert session.scores().shape == image.shape


def test_evaluate_paper_scores_a_head_checkpoint_with_its_head(chaos_like, tmp_path):  # noqa: F811
    import json

    torch.manual_seed(0)
    model = new_model(TrainConfig(**SMALL))
    model.head, model.calibrated = build_head("mper", model.encoder.out_channels), True
    ckpt = save_model(model, tmp_path / "mper.pt")
    out = tmp_path / "paper"
    argv = [
        "paper", "--dataset", "chaos", "--data", str(chaos_like), "--checkpoints", str(ckpt),
        "--folds", "4", "--prototypes", "1", "--no-multiclass", "--device", "cpu",
        "--out", str(out), "--quiet",
    ]  # fmt: skip
    assert evaluate_main(argv) == 0
    records = json.loads((out / "per_volume.json").read_text())["records"]
    assert records and {r["head"] for r in records} == {"mper"}
    assert "compared mper head" in (out / "results.md").read_text()
