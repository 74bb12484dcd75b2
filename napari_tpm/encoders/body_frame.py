"""Where a pixel lies in the body: each slice's body box and coordinates across it.

The filter bank's position channels (:class:`~napari_tpm.encoders.filterbank.FilterBankEncoder`)
and the session's axial frame (:mod:`napari_tpm.axial_frame`), which finds the boxes once for a
whole scan, share these two functions, so both compute positions by one formula.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


def body_boxes(mask: np.ndarray, quantile: float = 0.0) -> np.ndarray:
    """Box ``(y0, y1, x0, x1)`` of the largest connected component of each 2-D mask.

    ``mask`` is ``[B, h, w]`` bool. The box spans the ``quantile`` and ``1 - quantile``
    quantiles of the component's pixel coordinates (0: its exact bounding box). Slices with no
    foreground get the whole image as box.
    """
    b, h, w = mask.shape
    boxes = np.tile(np.array([0, h - 1, 0, w - 1], dtype=np.float32), (b, 1))
    for i in range(b):
        lab, n = ndimage.label(mask[i])
        if n == 0:
            continue
        big = int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
        ys, xs = np.nonzero(lab == big)
        q = (quantile, 1.0 - quantile)
        boxes[i, :2] = np.quantile(ys, q)
        boxes[i, 2:] = np.quantile(xs, q)
    return boxes


def box_coordinates(boxes: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """``[B, 2, h, w]``: each stride-map pixel's row and column across its slice's box
    ``boxes [B, 4]`` (``y0, y1, x0, x1`` in stride-map pixels), -1 to 1 from edge to edge.
    The bank's position channels, and :mod:`napari_tpm.axial_frame`'s for boxes found once
    for a whole scan."""
    b = boxes.shape[0]
    h, w = size_hw
    yy = torch.arange(h, device=boxes.device, dtype=boxes.dtype).view(1, h, 1)
    xx = torch.arange(w, device=boxes.device, dtype=boxes.dtype).view(1, 1, w)
    y0, y1, x0, x1 = (boxes[:, i].view(b, 1, 1) for i in range(4))
    v = (2 * yy - y0 - y1) / (y1 - y0).clamp_min(1.0)
    u = (2 * xx - x0 - x1) / (x1 - x0).clamp_min(1.0)
    return torch.stack([v.expand(b, h, w), u.expand(b, h, w)], 1)
