"""The training loop, written as a generator of `Progress` so every front end shares it.

``train_steps(model, volumes, config)`` trains a `TPMModel` in place on supervoxel episodes and
yields one `Progress` per optimisation step. The CLI drains it under a tqdm bar; test-time
adaptation (``adapt()``) can call it with a few steps, a small learning rate and
``trainable="last"``; tests simply iterate it and may stop early, which is how a kill is
simulated (stopping the generator still writes the current weights back into the model).

Optimisation follows tpm-method.md section 6: SGD (lr 1e-3, momentum 0.9, weight decay 5e-4 on
every trainable parameter, theta included), lr x0.95 every 1000 steps, gradient values clipped
to +-1, and after every step exponential moving averages (rate 1e-3) of sigma_F and sigma_B
implied by the current T and of the query's ideal distance threshold.

With a ``run_dir`` the loop checkpoints atomically to ``run_dir/last.pt`` (weights, optimiser,
scheduler, EMA, RNG state, step) and exports the model with `save_model`; ``resume=True``
continues from there with the same step count and learning-rate schedule. Episodes are seeded
by their index, so a resumed run sees the same episodes as an uninterrupted one.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from napari_tpm.devices import bf16_autocast_pays
from napari_tpm.progress import Progress
from napari_tpm.tpm import (
    ALPHA,
    THETA_INIT,
    T_from_td,
    td_from_T,
    theta_from_T,
)
from napari_tpm.train.checkpointing import CHECKPOINT_FORMAT, read_checkpoint, save_checkpoint_file
from napari_tpm.train.ddp import DistInfo, barrier, mean_across, resolve_device
from napari_tpm.train.episodes import EpisodeDataset, EpisodeRange, worker_init
from napari_tpm.train.head_losses import episode_model
from napari_tpm.train.runlog import CsvLog
from napari_tpm.train.setup import (
    RunningStats,
    TrainConfig,
    freeze_bn,
    set_trainable,
)
from napari_tpm.train.volumes import TrainingVolume


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) for k, v in batch.items()}


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Owns the optimiser, schedule, EMAs and run files of one training run.

    Args:
        model: the `TPMModel` to train in place (its encoder object is trained directly).
        volumes: prepared volumes with supervoxels.
        config: the run's `TrainConfig`.
        run_dir: where ``last.pt``, the exported model and the CSV log go (None: no files).
        dist: DDP position (default: single process).
        export_path: where the exported model is written (default ``run_dir/model.pt``).
    """

    def __init__(
        self,
        model,
        volumes: Sequence[TrainingVolume],
        config: TrainConfig,
        *,
        run_dir: str | os.PathLike | None = None,
        dist: DistInfo | None = None,
        export_path: str | os.PathLike | None = None,
    ) -> None:
        self.model = model
        self.volumes = list(volumes)
        self.config = config
        self.dist = dist or DistInfo()
        self.device = resolve_device(config.device, self.dist.local_rank)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.export_path = (
            Path(export_path)
            if export_path is not None
            else (self.run_dir / "model.pt" if self.run_dir else None)
        )
        self.step = 0
        self.last_record: dict[str, Any] = {}
        self.elapsed = 0.0
        self.stopped_early = False  # set by run() when its time limit ended it
        alpha = float(getattr(model, "alpha", ALPHA))
        t_d = float(model.t_d)
        theta = (
            THETA_INIT
            if abs(t_d - 1.0) < 1e-12 and alpha == ALPHA
            else theta_from_T(T_from_td(t_d, alpha), 0.5, alpha)
        )
        use_bf16 = bool(config.amp and bf16_autocast_pays(self.device))
        if config.amp and not use_bf16:
            warnings.warn(
                f"--amp ignored: this {self.device.type} has no native bfloat16, where bf16 "
                "autocast is emulated and many times slower; training in float32",
                RuntimeWarning,
                stacklevel=2,
            )
        self.bf16 = use_bf16
        encoder = model.encoder
        if hasattr(encoder, "set_runtime"):
            encoder.set_runtime(bf16=use_bf16, channels_last=config.channels_last)
        self.net = episode_model(
            model,
            encoder,
            float(theta),
            config.head,
            alpha=alpha,
            bg_weight=config.bg_weight,
            align_weight=config.align_weight,
            t_loss_weight=config.t_weight,
        ).to(self.device)
        set_trainable(self.net, config.trainable)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.wrapped: nn.Module = self.net
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(self.net, device_ids=ids)
        self.optimizer = torch.optim.SGD(
            self.params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=self._milestones(), gamma=config.lr_gamma
        )
        self.stats = RunningStats(
            sigma_f=float(model.sigma_f),
            sigma_b=float(model.sigma_b),
            idt=t_d,
            rate=config.ema_rate,
            alpha=alpha,
        )
        self.log = CsvLog(self.run_dir / "losses.csv") if self._writes else None

    # ---------------------------------------------------------------- helpers
    @property
    def _writes(self) -> bool:
        return self.run_dir is not None and self.dist.is_main

    def _milestones(self) -> list[int]:
        step = max(1, int(self.config.lr_step))
        return list(range(step, max(self.config.steps, step + 1), step))

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def checkpoint_path(self) -> Path | None:
        return self.run_dir / "last.pt" if self.run_dir else None

    # ---------------------------------------------------------------- one step
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """One SGD step on a collated batch of episodes; returns the step's record."""
        self.net.train()
        if self.config.freeze_bn:
            freeze_bn(self.net)
        batch = _to_device(batch, self.device)
        out = self.wrapped(batch)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        if self.config.clip_grad:
            torch.nn.utils.clip_grad_value_(self.params, self.config.clip_grad)
        lr = self.lr
        self.optimizer.step()
        self.scheduler.step()
        idt = mean_across(out["idt"], self.dist, self.device)
        T = float(out["T"])
        self.stats.update(T, idt)
        return {
            "loss": float(out["loss"].detach()),
            "seg": float(out["seg"]),
            "align": float(out["align"]),
            "t_loss": float(out["t_loss"]),
            "lr": lr,
            "t_d": float(td_from_T(T, self.net.alpha)),
            "idt_ema": self.stats.idt,
            "sigma_f": self.stats.sigma_f,
            "sigma_b": self.stats.sigma_b,
        }

    # ---------------------------------------------------------------- the loop
    def loader(self) -> DataLoader:
        cfg = self.config
        dataset = EpisodeDataset(
            self.volumes, cfg.episode_config(), seed=cfg.seed, rank=self.dist.rank
        )
        b = cfg.batch_size
        return DataLoader(
            dataset,
            batch_size=b,
            sampler=EpisodeRange(self.step * b, cfg.steps * b),
            num_workers=cfg.workers,
            worker_init_fn=worker_init if cfg.workers else None,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if cfg.workers else None,
        )

    def run(self, time_limit_s: float | None = None) -> Iterator[Progress]:
        """Train from the current step to ``config.steps``, one `Progress` per step.

        With ``time_limit_s``, stop after the step that used up that much wall time in this
        call, checkpoint there and leave ``stopped_early`` set: a lent machine or a session
        with a fixed length trains for its budget, and ``--resume`` continues the same
        schedule later (the step count and learning-rate milestones are unchanged).
        """
        total = self.config.steps
        self.stopped_early = False
        if self.step >= total:
            return
        if self.log is not None:
            self.log.truncate(self.step, self.last_record)
        start = time.perf_counter()
        done_here = 0
        try:
            for batch in self.loader():
                record = self.train_step(batch)
                self.step += 1
                done_here += 1
                now = time.perf_counter()
                record["seconds"] = self.elapsed + (now - start)
                record["step"] = self.step
                record["it_s"] = done_here / max(now - start, 1e-9)
                self.last_record = record
                if self.log is not None:
                    self.log.write(record)
                out_of_time = time_limit_s is not None and now - start >= time_limit_s
                out_of_time = out_of_time and self.step < total
                every = max(1, int(self.config.checkpoint_every))
                due = self.step % every == 0 or self.step == total or out_of_time
                if self.run_dir is not None and due:
                    self.save_checkpoint()
                yield Progress(self.step, total, "train", info=dict(record))
                if out_of_time:
                    self.stopped_early = True
                    break
        finally:
            self.elapsed += time.perf_counter() - start
            self.sync_model()
            if self.log is not None:
                self.log.flush()
                self.log.close()

    # ---------------------------------------------------------------- state
    def sync_model(self) -> None:
        """Write the learned threshold and the EMAs back into the `TPMModel`."""
        m = self.model
        m.t_d = float(self.net.distance_threshold().detach())
        m.sigma_f = float(self.stats.sigma_f)
        m.sigma_b = float(self.stats.sigma_b)
        m.calibrated = True
        card = dict(getattr(m, "card", None) or {})
        card["training"] = {
            **card.get("training", {}),
            "config": asdict(self.config),
            "steps": self.step,
            "seconds": round(self.elapsed, 1),  # training wall time over every sitting
            "final_losses": {
                k: self.last_record[k]
                for k in ("loss", "seg", "align", "t_loss")
                if k in self.last_record
            },
            "ema": {"idt": self.stats.idt, "prior": self.stats.prior(m.t_d)},
            "data": [v.source or v.name for v in self.volumes],
            "world_size": self.dist.world_size,
            "bf16": self.bf16,
        }
        m.card = card

    def state_dict(self) -> dict[str, Any]:
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        sched = self.scheduler.state_dict()
        sched["milestones"] = dict(sched.get("milestones", {}))
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "elapsed": self.elapsed,
            "config": asdict(self.config),
            "encoder_config": self.net.encoder.config(),
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": sched,
            "stats": {
                "sigma_f": self.stats.sigma_f,
                "sigma_b": self.stats.sigma_b,
                "idt": self.stats.idt,
            },
            "rng": rng,
            "last_record": {k: v for k, v in self.last_record.items() if isinstance(v, float)},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from collections import Counter

        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a napari-tpm training checkpoint (format {state.get('format')})")
        if state["encoder_config"] != self.net.encoder.config():
            raise ValueError(
                "the checkpoint's encoder differs from this run's: "
                f"{state['encoder_config']} vs {self.net.encoder.config()}"
            )
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        sched = dict(state["scheduler"])
        sched["milestones"] = Counter(self._milestones())  # follow this run's --steps
        self.scheduler.load_state_dict(sched)
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed", 0.0))
        s = state["stats"]
        self.stats.sigma_f, self.stats.sigma_b, self.stats.idt = (
            float(s["sigma_f"]),
            float(s["sigma_b"]),
            float(s["idt"]),
        )
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.last_record = dict(state.get("last_record", {}))
        self.sync_model()  # the model reflects the checkpoint even if no step follows

    def save_checkpoint(self) -> None:
        """``last.pt`` (full state) and the exported model, both atomically; rank 0 only."""
        if not self._writes:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint_file(self.state_dict(), self.checkpoint_path)
        if self.log is not None:
            self.log.flush()
        self.sync_model()
        self.export()

    def export(self, path: str | os.PathLike | None = None) -> Path | None:
        """Save the `TPMModel` with `save_model` (rank 0 only)."""
        from napari_tpm.checkpoints import save_model

        target = Path(path) if path is not None else self.export_path
        if target is None or not self.dist.is_main:
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        save_model(self.model, target)
        return target

    def resume(
        self,
        path: str | os.PathLike | None = None,
        *,
        state: dict[str, Any] | None = None,
        report: Any = None,
    ) -> bool:
        """Load ``last.pt`` (or ``path``, or an already read ``state``); returns whether it did.

        An unreadable ``last.pt`` falls back to ``last.prev.pt`` (`read_checkpoint`), telling
        ``report``. Raises ValueError when the checkpoint belongs to another encoder.
        """
        if state is None:
            ckpt = Path(path) if path is not None else self.checkpoint_path
            found = read_checkpoint(ckpt, report) if ckpt is not None else None
            if found is None:
                return False
            state = found[0]
        self.load_state_dict(state)
        barrier(self.dist)
        return True


def train_steps(
    model,
    volumes: Sequence[TrainingVolume],
    config: TrainConfig,
    *,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    dist: DistInfo | None = None,
) -> Iterator[Progress]:
    """Train ``model`` in place on supervoxel episodes of ``volumes``; one `Progress` per step.

    This is the reusable core: the CLI, DDP runs and test-time adaptation all drive it. Stopping
    the iteration early leaves the model with the weights and thresholds reached so far.
    """
    trainer = Trainer(model, volumes, config, run_dir=run_dir, dist=dist)
    if resume:
        trainer.resume()
    yield from trainer.run()
