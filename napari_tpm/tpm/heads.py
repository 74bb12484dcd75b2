"""Compared scoring heads: DSPNet-style and MPER-style prototypes, beside TPM's tied Gaussians.

TPM scores a query pixel by its distance to ONE foreground prototype and treats the background
as an anomaly. The two heads here are simplified versions of related methods (issue 11 item 6),
so they can be trained through the same supervoxel episodes and scored by the same protocol:

* `DSPNetHead`, after Tang et al., "Few-shot medical image segmentation with high-fidelity
  prototypes" (DSPNet, arXiv 2406.18074). Detail self-refining of prototypes:
  - FSPA-like foreground: K local prototypes l_k are mined from the support foreground by
    clustering (here: the project's spherical EM, `fit_spherical_gmm`, on feature cells, with
    responsibility-weighted means so gradients reach the encoder). Per channel c they are fused
    with attention a_kc = softmax_k(tau_c C g_c l_kc) keyed by the global prototype g, and the
    fused vector enters the class prototype through a learned per-channel gate
    gamma_c = sigmoid(beta_c): p_F = norm((1 - gamma) g + gamma sum_k a_k l_k).
  - BCMA-like background: the pooled support background b is re-weighted by a
    squeeze-excitation block, p_B = norm(b * 2 sigmoid(W2 relu(W1 b))); W2 starts at zero, so
    the block starts as the identity. (DSPNet's sparse multi-head channel attention and its
    resemblance attention network are not built; one SE block stands for them.)
  - log-odds ``alpha (cos(x, p_F) - cos(x, p_B))``: the two-class softmax of scaled cosines.
* `MPERHead`, after Che et al., "Multi-prototype embedding refinement for semi-supervised
  medical image segmentation" (MPER, arXiv 2503.14343). Multi-prototype classification:
  - K prototypes per class (foreground and support background, spherical EM as above); a class
    scores ``S_c(x) = logsumexp_k alpha cos(x, p_ck)`` (a soft maximum over its prototypes);
    the prototype branch's log-odds is S_F - S_B.
  - a linear branch: a 1x1 convolution over ``[x * m_F, x * m_B]`` (m: the classes' mean
    prototypes), initialised to ``alpha (cos(x, m_F) - cos(x, m_B))``. In MPER the linear
    classifier has one learned weight per class; a few-shot episode's classes change every
    time, so here the weights act on the support-conditioned products instead.
  - consistency: the symmetric KL divergence of the two branches' Bernoulli posteriors. Both
    branches are trained with the segmentation loss; the head outputs their mean log-odds.
    (MPER's prototype updates from unlabelled data are not built.)

Every head maps (support features ``[S, C, h, w]``, support mask ``[S, H, W]`` or ``[H, W]``,
query features ``[B, C, h, w]``) to query log-odds at prior 0.5, ``[B, h, w]``. Masks are
area-averaged onto the feature grid (a simplification of TPM's upsampled masked average): a cell
weighs w in the foreground and 1 - w in the background.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .em import fit_spherical_gmm
from .features import channel_dot, l2_normalize

HEAD_NAMES = ("tpm", "dspnet", "mper")


def cell_pixels(features: torch.Tensor, mask: torch.Tensor):
    """Unit-norm feature cells ``[N, C]`` and their foreground weights ``[N]`` (in [0, 1])."""
    if mask.dim() == 2:
        mask = mask[None]
    h, w = features.shape[-2:]
    weights = F.adaptive_avg_pool2d(mask[:, None].float(), (h, w))  # [S, 1, h, w]
    x = l2_normalize(features.float(), dim=1).permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    return x, weights.reshape(-1).to(x.dtype)


def weighted_mean(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Normalised ``sum_n w_n x_n``: ``[N, C]``, ``[N]`` -> ``[C]``."""
    return l2_normalize((w[:, None] * x).sum(0), dim=0)


def mined_prototypes(
    x: torch.Tensor, w: torch.Tensor, k: int, sigma: float, max_iter: int = 20
) -> torch.Tensor:
    """K cluster prototypes of the weighted cells ``[K, C]``, differentiable in ``x``.

    EM (`fit_spherical_gmm`, seed 0) runs without gradient on the cells weighing at least half;
    the prototypes are then the weight- and responsibility-weighted means of all cells.
    """
    with torch.no_grad():
        keep = w >= 0.5
        if int(keep.sum()) == 0:
            keep = w > 0
        gmm = fit_spherical_gmm(x[keep], k, sigma, max_iter=max_iter, min_iter=3, seed=0)
        means, log_w = gmm.means.to(x), torch.log(gmm.weights.to(x).clamp_min(1e-12))
        resp = torch.softmax(log_w[None] + (x @ means.T) / sigma**2, dim=1)  # [N, K]
    r = resp * w[:, None]
    protos = (r.T @ x) / r.sum(0)[:, None].clamp_min(1e-8)
    return l2_normalize(protos, dim=1)


def cosine(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]``, ``[K, C]`` -> cosines ``[B, K, h, w]``."""
    f = l2_normalize(features.float(), dim=1)
    return channel_dot(f, l2_normalize(prototypes, dim=-1).to(f.dtype))


class _Head(nn.Module):
    """Shared plumbing: ``prepare`` (support -> state), ``score`` (state, query -> log-odds)."""

    kind = ""

    def __init__(self, channels: int, n_prototypes: int, alpha: float, sigma: float) -> None:
        super().__init__()
        self.channels, self.n_prototypes = int(channels), int(n_prototypes)
        self.alpha, self.sigma = float(alpha), float(sigma)

    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "channels": self.channels,
            "n_prototypes": self.n_prototypes,
            "alpha": self.alpha,
            "sigma": self.sigma,
        }

    def forward(self, support: torch.Tensor, mask: torch.Tensor, query: torch.Tensor):
        return self.score(self.prepare(support, mask), query)

    def train_outputs(self, support, mask, query) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Log-odds the segmentation loss is applied to, and the head's own extra loss."""
        return [self(support, mask, query)], None


class DSPNetHead(_Head):
    """DSPNet-style detail self-refined prototypes (module docstring)."""

    kind = "dspnet"

    def __init__(
        self, channels: int, n_prototypes: int = 3, alpha: float = 20.0, sigma: float = 0.3
    ) -> None:
        super().__init__(channels, n_prototypes, alpha, sigma)
        c = self.channels
        self.key_scale = nn.Parameter(torch.ones(c))  # tau_c
        self.gate = nn.Parameter(torch.full((c,), -2.0))  # beta_c: gamma starts at 0.12
        hidden = max(4, c // 4)
        self.se_down = nn.Linear(c, hidden)
        self.se_up = nn.Linear(hidden, c)
        nn.init.zeros_(self.se_up.weight)
        nn.init.zeros_(self.se_up.bias)

    def prepare(self, support: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        x, w = cell_pixels(support, mask)
        g = weighted_mean(x, w)
        local = mined_prototypes(x, w, self.n_prototypes, self.sigma)  # [K, C]
        att = torch.softmax(self.key_scale * self.channels * g[None] * local, dim=0)
        gamma = torch.sigmoid(self.gate)
        fg = l2_normalize((1 - gamma) * g + gamma * (att * local).sum(0), dim=0)
        b = weighted_mean(x, 1 - w)
        excite = 2 * torch.sigmoid(self.se_up(torch.relu(self.se_down(b))))
        bg = l2_normalize(b * excite, dim=0)
        return {"prototypes": torch.stack([fg, bg])}

    def score(self, state: dict[str, torch.Tensor], query: torch.Tensor) -> torch.Tensor:
        cos = cosine(query, state["prototypes"])
        return self.alpha * (cos[:, 0] - cos[:, 1])


def consistency_loss(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Symmetric KL of two Bernoulli posteriors given by log-odds, mean over pixels (>= 0)."""
    la, lb = logits_a.float(), logits_b.float()
    pa, pb = torch.sigmoid(la), torch.sigmoid(lb)
    # KL(a||b) + KL(b||a) = (p_a - p_b) (logit a - logit b) for Bernoulli distributions
    return ((pa - pb) * (la - lb)).mean()


class MPERHead(_Head):
    """MPER-style multi-prototype classifier with a consistent linear branch (module docstring)."""

    kind = "mper"

    def __init__(
        self,
        channels: int,
        n_prototypes: int = 3,
        alpha: float = 20.0,
        sigma: float = 0.3,
        consistency: float = 1.0,
    ) -> None:
        super().__init__(channels, n_prototypes, alpha, sigma)
        self.consistency = float(consistency)
        c = self.channels
        self.linear = nn.Conv2d(2 * c, 1, 1)
        with torch.no_grad():
            self.linear.weight[:, :c] = self.alpha
            self.linear.weight[:, c:] = -self.alpha
            self.linear.bias.zero_()

    def config(self) -> dict[str, Any]:
        return {**super().config(), "consistency": self.consistency}

    def prepare(self, support: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        x, w = cell_pixels(support, mask)
        k = self.n_prototypes
        return {
            "fg": mined_prototypes(x, w, k, self.sigma),
            "bg": mined_prototypes(x, 1 - w, k, self.sigma),
            "means": torch.stack([weighted_mean(x, w), weighted_mean(x, 1 - w)]),
        }

    def branches(self, state: dict[str, torch.Tensor], query: torch.Tensor):
        """(prototype-branch log-odds, linear-branch log-odds), each ``[B, h, w]``."""
        s_f = torch.logsumexp(self.alpha * cosine(query, state["fg"]), dim=1)
        s_b = torch.logsumexp(self.alpha * cosine(query, state["bg"]), dim=1)
        f = l2_normalize(query.float(), dim=1)
        m = state["means"][:, :, None, None]
        lin = self.linear(torch.cat([f * m[0], f * m[1]], dim=1))[:, 0]
        return s_f - s_b, lin

    def score(self, state: dict[str, torch.Tensor], query: torch.Tensor) -> torch.Tensor:
        proto, lin = self.branches(state, query)
        return 0.5 * (proto + lin)

    def train_outputs(self, support, mask, query):
        proto, lin = self.branches(self.prepare(support, mask), query)
        return [proto, lin], self.consistency * consistency_loss(proto, lin)


_CLASSES = {"dspnet": DSPNetHead, "mper": MPERHead}


def check_head_config(config: Any) -> dict[str, Any]:
    """Raise ValueError unless ``config`` describes a head this module can build."""
    if not isinstance(config, dict) or config.get("kind") not in _CLASSES:
        raise ValueError(f"unknown head {config!r}; known: {sorted(_CLASSES)}")
    checks = {
        "channels": (1, 4096),
        "n_prototypes": (1, 16),
        "alpha": (1e-3, 1e3),
        "sigma": (1e-3, 2.0),
        "consistency": (0.0, 1e3),
    }
    for key, (lo, hi) in checks.items():
        if key in config:
            value = config[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"head {key} must be a number, got {value!r}")
            if not lo <= float(value) <= hi:
                raise ValueError(f"head {key} = {value} outside [{lo}, {hi}]")
    unknown = set(config) - set(checks) - {"kind"}
    if unknown:
        raise ValueError(f"unknown head entries {sorted(unknown)}")
    return config


def build_head(kind_or_config: str | dict[str, Any], channels: int | None = None) -> _Head:
    """A head from its name (with ``channels``) or from a stored ``config()``."""
    if isinstance(kind_or_config, str):
        if channels is None:
            raise ValueError("building a head by name needs the encoder's channel count")
        config: dict[str, Any] = {"kind": kind_or_config, "channels": int(channels)}
    else:
        config = dict(kind_or_config)
    check_head_config(config)
    kind = config.pop("kind")
    return _CLASSES[kind](**config)


__all__ = [
    "HEAD_NAMES",
    "DSPNetHead",
    "MPERHead",
    "build_head",
    "cell_pixels",
    "check_head_config",
    "consistency_loss",
    "mined_prototypes",
]
