"""The training loop: it learns, resumes exactly, exports a loadable calibrated model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from napari_tpm.checkpoints import load_model
from napari_tpm.phantom import make_phantom_dataset
from napari_tpm.train.analysis import fit_estimators
from napari_tpm.train.episodes import EpisodeConfig
from napari_tpm.train.runlog import plot_losses, read_log
from napari_tpm.train.setup import new_model
from napari_tpm.train.trainer import TrainConfig, Trainer, train_steps
from napari_tpm.train.volumes import volume_from_array

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SMALL = {"encoder": "resnet18-l3", "min_support_px": 25, "device": "cpu", "seed": 0}


@pytest.fixture(scope="module")
def volumes():
    phantoms = make_phantom_dataset(3, shape=(12, 48, 48), seed=20)
    return [
        volume_from_array(p.image, p.spacing, name=f"p{i}", size=48, min_size=60)
        for i, p in enumerate(phantoms)
    ]


def _model(config: TrainConfig, seed: int = 0):
    torch.manual_seed(seed)
    return new_model(config)


@pytest.fixture(scope="module")
def trained(volumes, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    config = TrainConfig(steps=24, checkpoint_every=12, **SMALL)
    model = _model(config)
    steps = list(train_steps(model, volumes, config, run_dir=run))
    return model, run, steps, config


def test_a_short_run_lowers_the_loss(trained):
    _, _, steps, _ = trained
    losses = np.array([p.info["loss"] for p in steps])
    assert [p.done for p in steps] == list(range(1, 25))
    assert all(p.stage == "train" and p.total == 24 for p in steps)
    # measured ratios over seeds 0-4: 0.30-0.37
    assert losses[-8:].mean() < 0.75 * losses[:8].mean()


def test_the_run_folder_holds_checkpoint_log_plot_and_model(trained):
    _, run, _, _ = trained
    rows = read_log(run / "losses.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 25))
    assert (run / "last.pt").is_file() and (run / "model.pt").is_file()
    png = plot_losses(run / "losses.csv", run / "losses.png")
    assert png.stat().st_size > 1000
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["step"] == 24


def test_exported_model_loads_with_load_model(trained):
    model, run, _, _ = trained
    loaded = load_model(run / "model.pt")
    assert loaded.calibrated
    assert loaded.t_d == pytest.approx(model.t_d) and 0.5 < loaded.t_d < 1.5
    assert loaded.sigma_f == pytest.approx(model.sigma_f)
    assert loaded.card["training"]["steps"] == 24
    x = torch.randn(1, 1, 48, 48)
    model.encoder.eval()
    torch.testing.assert_close(loaded.encoder(x), model.encoder(x))


def test_estimators_are_fitted_for_one_and_several_prototypes(trained, volumes):
    model, _, _, _ = trained
    est = fit_estimators(
        model,
        volumes,
        8,
        n_prototypes=3,
        max_classes=3,
        device="cpu",
        episode_config=EpisodeConfig(min_support_px=25),
    )
    assert set(est) == {"sp", "mp", "multiclass"}
    for key in ("sp", "mp"):
        assert est[key]["episodes"] == 8
        assert 0 < est[key]["avgest"]["prior"] < 1
        assert np.isfinite([est[key]["linest"][b] for b in ("b0", "b1", "b2")]).all()
    assert est["mp"]["n_prototypes"] == 3
    assert "avgest" in est["multiclass"]


def test_kill_and_resume_gives_the_same_steps_schedule_and_weights(volumes, tmp_path):
    config = TrainConfig(steps=7, checkpoint_every=2, lr_step=2, lr_gamma=0.5, **SMALL)
    full = _model(config)
    ref = Trainer(full, volumes, config, run_dir=tmp_path / "full")
    list(ref.run())

    killed = _model(config)
    run = train_steps(killed, volumes, config, run_dir=tmp_path / "killed")
    for p in run:
        if p.done == 5:
            break
    run.close()  # "killed" after step 5; the last checkpoint is step 4

    resumed = Trainer(_model(config, seed=123), volumes, config, run_dir=tmp_path / "killed")
    assert resumed.resume() and resumed.step == 4
    assert resumed.lr == pytest.approx(1e-3 * 0.25)
    done = [p.done for p in resumed.run()]
    assert done == [5, 6, 7] and resumed.step == 7
    assert resumed.lr == pytest.approx(ref.lr) and resumed.lr == pytest.approx(1e-3 * 0.125)
    assert resumed.scheduler.last_epoch == ref.scheduler.last_epoch == 7
    for (name, a), b in zip(ref.net.state_dict().items(), resumed.net.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    rows = read_log(tmp_path / "killed" / "losses.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    ref_rows = read_log(tmp_path / "full" / "losses.csv")
    for key in ("loss", "lr", "t_d", "idt_ema"):
        assert [r[key] for r in rows] == [r[key] for r in ref_rows], key


def test_trainable_last_only_updates_the_last_stage(volumes):
    config = TrainConfig(steps=2, trainable="last", freeze_bn=True, **SMALL)
    model = _model(config)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    list(train_steps(model, volumes, config))
    after = model.encoder.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed
    assert all(k.startswith(("backbone.layer3.", "projection.")) for k in changed), changed


def test_dataloader_workers_give_the_same_episodes_as_the_main_process(volumes):
    losses = {}
    for workers in (0, 2):
        config = TrainConfig(steps=3, workers=workers, **SMALL)
        model = _model(config)
        losses[workers] = [p.info["loss"] for p in train_steps(model, volumes, config)]
    assert losses[0] == losses[2]


@pytest.mark.parametrize("native", [True, False])
def test_amp_uses_bf16_only_where_the_cpu_has_it(volumes, monkeypatch, native):
    """Emulated bf16 is many times slower than float32: --amp then warns and trains in fp32."""
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda native=native: native, raising=False)
    config = TrainConfig(steps=1, amp=True, **SMALL)
    model = _model(config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = Trainer(model, volumes, config)
    said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert model.encoder.autocast_dtype == (torch.bfloat16 if native else None)
    assert trainer.bf16 is native
    assert bool(said) is not native, said
    assert all("--amp ignored" in s for s in said)
