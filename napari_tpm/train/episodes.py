"""Self-supervised training episodes from supervoxels (tpm-method.md sections 4 and 9).

One episode is a 1-way 1-shot task built from a single volume: a random supervoxel seen on two
neighbouring slices, one as the support (image + mask) and one as the query (image + target).
With ``max_classes > 1`` up to ``max_classes - 1`` further supervoxels of the same slices join as
extra foreground classes (multi-foreground training, section 9).

Every episode is a pure function of ``(seed, rank, index)``: `EpisodeDataset[index]` seeds its
own generator from those three numbers. That gives DDP ranks disjoint streams, makes the data
independent of the number of DataLoader workers, and lets a resumed run see exactly the episodes
the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from napari_tpm.train.augment import AugmentConfig, random_gamma, random_geometric
from napari_tpm.train.volumes import TrainingVolume


@dataclass(frozen=True)
class EpisodeConfig:
    """How episodes are drawn; the defaults are the reference's.

    Attributes:
        max_classes: 1 for binary episodes, up to 5 for multi-foreground ones.
        min_slice_px: a supervoxel "is on" a slice when it covers more than this many pixels.
        min_support_px: the support mask must cover at least this many pixels (and, in
            multi-foreground episodes, every extra class on the support slice).
        extra_class_draws: random draws allowed per extra class.
        augment: apply gamma and geometric augmentation.
        query_retries, support_retries: geometric re-draws when the warped mask vanishes.
    """

    max_classes: int = 1
    min_slice_px: int = 20
    min_support_px: int = 200
    extra_class_draws: int = 10
    augment: bool = True
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    query_retries: int = 5
    support_retries: int = 15


class SupervoxelIndex:
    """Per-slice pixel counts of every supervoxel of one volume, for fast episode sampling.

    ``counts[z, s]`` is the area of supervoxel ``s`` on slice ``z``. A supervoxel is *eligible*
    when it covers more than ``min_slice_px`` on at least two slices and one of the pairs of
    consecutive such slices has a support of at least ``min_support_px``, so the rejection loop
    of the sampler always ends.
    """

    def __init__(self, supervoxels: np.ndarray, min_slice_px: int, min_support_px: int) -> None:
        sv = np.asarray(supervoxels)
        n_ids = int(sv.max()) + 1 if sv.size else 1
        z = np.repeat(np.arange(sv.shape[0]), sv[0].size)
        flat = z * n_ids + sv.reshape(-1).astype(np.int64)
        self.counts = np.bincount(flat, minlength=sv.shape[0] * n_ids).reshape(sv.shape[0], n_ids)
        self.counts[:, 0] = 0
        self.min_slice_px = int(min_slice_px)
        self.min_support_px = int(min_support_px)
        on = self.counts > self.min_slice_px
        eligible = []
        for s in np.flatnonzero(on.sum(0) >= 2):
            zs = np.flatnonzero(on[:, s])
            if (self.counts[zs[:-1], s] >= self.min_support_px).any():
                eligible.append(s)
        self.eligible = np.asarray(eligible, dtype=np.int64)
        self.n_ids = n_ids

    def slices(self, sid: int) -> np.ndarray:
        return np.flatnonzero(self.counts[:, sid] > self.min_slice_px)


def _class_masks(sv_slice: np.ndarray, classes: Sequence[int]) -> torch.Tensor:
    return torch.from_numpy(np.stack([sv_slice == c for c in classes]).astype(np.float32))


class EpisodeDataset(Dataset):
    """Map-style dataset: ``dataset[i]`` is episode ``i`` of this (seed, rank) stream.

    Each item is a dict of tensors with fixed shapes (so the default collate stacks them):
    ``support``/``query`` ``[1, S, S]`` images, ``support_masks`` ``[max_classes, S, S]``
    (zeros for absent classes), ``query_label`` ``[S, S]`` int64 (0 background, k = class k),
    ``n_classes``, ``size`` (support foreground fraction of class 1), ``size_total`` (of all
    classes), ``loc`` (support slice position in [0, 1]), ``volume``, ``z_support``, ``z_query``.
    """

    def __init__(
        self,
        volumes: Sequence[TrainingVolume],
        config: EpisodeConfig | None = None,
        *,
        seed: int = 0,
        rank: int = 0,
        length: int = 1 << 62,
    ) -> None:
        self.volumes = list(volumes)
        self.config = config or EpisodeConfig()
        self.seed = int(seed)
        self.rank = int(rank)
        self.length = int(length)
        if not self.volumes:
            raise ValueError("no training volumes")
        shapes = {tuple(v.image.shape[1:]) for v in self.volumes}
        if len(shapes) != 1:
            raise ValueError(f"training volumes must share one slice size, got {sorted(shapes)}")
        self.indices: list[SupervoxelIndex | None] = []
        for v in self.volumes:
            if v.supervoxels is None:
                raise ValueError(f"{v.name}: supervoxels have not been computed")
            idx = SupervoxelIndex(
                v.supervoxels, self.config.min_slice_px, self.config.min_support_px
            )
            self.indices.append(idx if len(idx.eligible) else None)
        self.usable = [i for i, idx in enumerate(self.indices) if idx is not None]
        if not self.usable:
            raise ValueError(
                "no volume has a supervoxel spanning two slices with a support of at least "
                f"{self.config.min_support_px} pixels; lower the supervoxel min size or "
                "min_support_px"
            )

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.rank, int(index)])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.episode(self.rng(index))

    # ------------------------------------------------------------------ sampling
    def _pick_slices(self, rng: np.random.Generator, idx: SupervoxelIndex) -> tuple[int, int, int]:
        """Supervoxel and (support, query) slices, steps 2-6 of the reference sampler."""
        for _ in range(10_000):
            sid = int(rng.choice(idx.eligible))
            zs = idx.slices(sid)
            i = int(rng.integers(len(zs) - 1))
            z_s, z_q = int(zs[i]), int(zs[i + 1])
            if idx.counts[z_s, sid] >= idx.min_support_px:
                break
        if rng.random() < 0.5:
            z_s, z_q = z_q, z_s
        return sid, z_s, z_q

    def _extra_classes(
        self, rng: np.random.Generator, idx: SupervoxelIndex, first: int, z_s: int
    ) -> list[int]:
        classes = [first]
        if idx.n_ids <= 2:
            return classes
        for _ in range(self.config.max_classes - 1):
            for _ in range(self.config.extra_class_draws):
                c = int(rng.integers(1, idx.n_ids))
                if c not in classes and idx.counts[z_s, c] >= self.config.min_support_px:
                    classes.append(c)
                    break
        return classes

    def _augment(
        self,
        rng: np.random.Generator,
        s_img: torch.Tensor,
        s_masks: torch.Tensor,
        q_img: torch.Tensor,
        q_masks: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        aug = self.config.augmentation
        if rng.random() < 0.5:
            q_img = random_gamma(q_img, rng, aug)
        else:
            s_img = random_gamma(s_img, rng, aug)
        if rng.random() < 0.5 and float(q_masks.sum()) > 0:
            for _ in range(self.config.query_retries):
                img, masks = random_geometric(q_img, q_masks, rng, aug)
                if float(masks.sum()) > 0:
                    q_img, q_masks = img, masks
                    break
        else:
            for _ in range(self.config.support_retries):
                img, masks = random_geometric(s_img, s_masks, rng, aug)
                if float(masks[0].sum()) > 0:
                    s_img, s_masks = img, masks
                    break
        return s_img, s_masks, q_img, q_masks

    def episode(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Draw one episode with ``rng``."""
        cfg = self.config
        while True:
            v = int(rng.choice(self.usable))
            vol, idx = self.volumes[v], self.indices[v]
            sid, z_s, z_q = self._pick_slices(rng, idx)
            classes = self._extra_classes(rng, idx, sid, z_s) if cfg.max_classes > 1 else [sid]
            s_img = torch.from_numpy(np.ascontiguousarray(vol.image[z_s]))[None].float()
            q_img = torch.from_numpy(np.ascontiguousarray(vol.image[z_q]))[None].float()
            s_masks = _class_masks(vol.supervoxels[z_s], classes)
            q_masks = _class_masks(vol.supervoxels[z_q], classes)
            if cfg.augment:
                s_img, s_masks, q_img, q_masks = self._augment(rng, s_img, s_masks, q_img, q_masks)
            # Classes whose support shrank away are dropped (section 9); class 1 needs a pixel.
            areas = s_masks.sum(dim=(1, 2))
            floor = cfg.min_support_px if cfg.max_classes > 1 else 1
            keep = [k for k in range(len(classes)) if float(areas[k]) >= floor]
            if keep:
                break
        s_masks, q_masks = s_masks[keep], q_masks[keep]
        k = len(keep)
        h, w = s_img.shape[-2:]
        support_masks = torch.zeros((cfg.max_classes, h, w), dtype=torch.float32)
        support_masks[:k] = s_masks
        query_label = torch.zeros((h, w), dtype=torch.int64)
        for c in range(k):
            query_label[q_masks[c] > 0.5] = c + 1
        return {
            "support": s_img,
            "query": q_img,
            "support_masks": support_masks,
            "query_label": query_label,
            "n_classes": torch.tensor(k, dtype=torch.int64),
            "size": torch.tensor(float(s_masks[0].mean()), dtype=torch.float32),
            "size_total": torch.tensor(float(s_masks.sum(0).clamp(max=1).mean())),
            "loc": torch.tensor(z_s / max(vol.n_slices - 1, 1), dtype=torch.float32),
            "volume": torch.tensor(v, dtype=torch.int64),
            "z_support": torch.tensor(z_s, dtype=torch.int64),
            "z_query": torch.tensor(z_q, dtype=torch.int64),
        }


class EpisodeRange(torch.utils.data.Sampler):
    """Indices ``start, start + 1, ..., stop - 1``: the episodes of the remaining steps."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = int(start), int(stop)

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def worker_init(_: int) -> None:
    """DataLoader workers use one thread each: the episode work is small and the cores are
    better left to the training process."""
    torch.set_num_threads(1)
