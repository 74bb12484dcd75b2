"""The anchor: an ilastik-style pixel random forest trained on the painted slice(s).

Features are scikit-image's ``multiscale_basic_features`` (Gaussian-smoothed intensity, gradient
magnitude and Hessian eigenvalues at sigmas 1..16 pixels) of the raw slice, as ilastik computes
them on raw data; a scikit-learn ``RandomForestClassifier`` learns background vs organ (or
background vs every painted organ in ``multi`` mode) from the painted pixels, and is applied
slice by slice to the query volume.

Cost control, stated in the results: training pixels are subsampled per class with a fixed
seed, the forest has 32 trees (ilastik uses 100) and ``n_jobs=1``, and it predicts every
``stride``-th pixel in y and x (default 2, nearest-neighbour upsampled: 4x cheaper). Every
forest of one query volume is applied in one pass over its slices, so the features of each
slice are computed once. Results are cached on disk, keyed by the forest's settings, so that
re-running TPM variants never recomputes the anchor.

Requires the ``bench`` extra (scikit-learn), never a runtime dependency of the package.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

CACHE_DIR = Path("/tmp/napari_tpm_bench_accuracy")


@dataclass(frozen=True)
class ForestConfig:
    """Every setting that changes the forest's predictions (part of the cache key)."""

    n_estimators: int = 32
    max_depth: int | None = None
    sigma_min: float = 1.0
    sigma_max: float = 16.0
    per_class: int = 2000  # training pixels per class (background: twice this)
    stride: int = 2
    seed: int = 0
    version: int = 1  # bump when the protocol around the forest changes

    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]


@dataclass
class ForestJob:
    """One forest: trained on ``paint`` (class k > 0 per pixel) of ``image``'s painted slices."""

    key: str
    image: np.ndarray  # the support volume (raw intensities)
    paint: np.ndarray  # same grid; 0 = background of the painted slices, k = class k


def slice_features(plane: np.ndarray, cfg: ForestConfig) -> np.ndarray:
    """(H, W, F) float32 features of one raw 2D slice."""
    from skimage.feature import multiscale_basic_features

    return multiscale_basic_features(
        np.asarray(plane, dtype=np.float32),
        intensity=True,
        edges=True,
        texture=True,
        sigma_min=cfg.sigma_min,
        sigma_max=cfg.sigma_max,
    ).astype(np.float32, copy=False)


def train(job: ForestJob, cfg: ForestConfig):
    """Fit the job's forest on its painted slices (every slice holding paint)."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(cfg.seed)
    xs, ys = [], []
    for z in np.flatnonzero(job.paint.any(axis=(1, 2))):
        feats = slice_features(job.image[z], cfg)
        target = job.paint[z].ravel().astype(np.int64)
        flat = feats.reshape(-1, feats.shape[-1])
        for k in np.unique(target):
            idx = np.flatnonzero(target == k)
            cap = cfg.per_class * (2 if k == 0 else 1)
            if idx.size > cap:
                idx = rng.choice(idx, cap, replace=False)
            xs.append(flat[idx])
            ys.append(target[idx])
    forest = RandomForestClassifier(
        n_estimators=cfg.n_estimators,
        max_depth=cfg.max_depth,
        n_jobs=1,
        random_state=cfg.seed,
    )
    forest.fit(np.concatenate(xs), np.concatenate(ys))
    return forest


def predict(image: np.ndarray, jobs: list[ForestJob], cfg: ForestConfig) -> dict[str, np.ndarray]:
    """Train every job's forest, then label ``image`` slice by slice with all of them.

    Returns per job key a uint8 label volume on ``image``'s grid (0 = background).
    """
    forests = {job.key: train(job, cfg) for job in jobs}
    out = {key: np.zeros(image.shape, np.uint8) for key in forests}
    s = max(int(cfg.stride), 1)
    h, w = image.shape[1:]
    for z in range(image.shape[0]):
        feats = slice_features(image[z], cfg)[::s, ::s]
        flat = feats.reshape(-1, feats.shape[-1])
        for key, forest in forests.items():
            if forest.classes_.size == 1:
                lab = np.full(flat.shape[0], forest.classes_[0])
            else:
                lab = forest.classes_[np.argmax(forest.predict_proba(flat), axis=1)]
            lab = lab.reshape(feats.shape[:2]).astype(np.uint8)
            if s > 1:
                lab = np.repeat(np.repeat(lab, s, axis=0), s, axis=1)[:h, :w]
            out[key][z] = lab
    return out


class ForestCache:
    """Dice results of the forest per ``case|mode|organ`` for one ForestConfig, as JSON."""

    def __init__(self, cfg: ForestConfig, directory: Path = CACHE_DIR) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"forest_{cfg.key()}.json"
        self.data: dict[str, float | None] = {}
        if self.path.exists():
            self.data = json.loads(self.path.read_text())

    def get(self, key: str) -> tuple[bool, float | None]:
        return (key in self.data, self.data.get(key))

    def put(self, key: str, value: float | None) -> None:
        self.data[key] = value

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=0, sort_keys=True))
        tmp.replace(self.path)
