"""Learning from unlabelled pixels: the strong view and the pseudo-label loss of semi-supervised training.

Two methods share one loss, computed per training step on a batch of pool patches (the unlabelled
rows, and the unrevealed pixels of labelled ones, carry no label):

- ``"fixmatch"`` (FixMatch, Sohn et al. 2020; UniMatch, Yang et al. CVPR 2023, for segmentation):
  the network being trained predicts a weak view (a random flip / rotation) without gradient; its
  confident pixels (top probability >= ``confidence``) become pseudo-labels, and the network is
  trained on a *strong* view of the same patch (:func:`strong_view`: stain (HED) and colour
  jitter, Gaussian blur, cutout) against them;
- ``"self-training"`` (pseudo-label self-training between rounds): the pseudo-labels come from a
  frozen copy of the network as the fit started (the previous round's), and the network is trained
  on the weak view itself.

Pure torch functions, no state: the estimator (:class:`focal_al.estimator.SegmentationNet`) owns
the batches, the random streams and the weighting.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["METHODS", "strong_view", "pseudo_labels", "pseudo_label_loss"]

#: The semi-supervised methods of ``SegmentationNet(semi_supervised=...)``.
METHODS = ("fixmatch", "self-training")

# Ruifrok & Johnston's haematoxylin-eosin-DAB stain vectors (as scikit-image's rgb2hed uses them).
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _RGB_FROM_HED / _RGB_FROM_HED.norm(dim=1, keepdim=True)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)


def _uniform(shape, low: float, high: float, generator, device) -> torch.Tensor:
    return (low + (high - low) * torch.rand(shape, generator=generator)).to(device)


def _hed_jitter(x: torch.Tensor, sigma: float, generator) -> torch.Tensor:
    """Scale and shift each stain's optical density per sample (Tellez et al. 2018)."""
    n = x.shape[0]
    od = -torch.log(x.clamp(min=1e-6)).permute(0, 2, 3, 1)  # (n, H, W, 3) optical density
    hed = od @ _HED_FROM_RGB.to(x.device, x.dtype)
    alpha = _uniform((n, 1, 1, 3), 1 - sigma, 1 + sigma, generator, x.device)
    beta = _uniform((n, 1, 1, 3), -sigma, sigma, generator, x.device)
    rgb = torch.exp(-((hed * alpha + beta) @ _RGB_FROM_HED.to(x.device, x.dtype)))
    return rgb.permute(0, 3, 1, 2).clamp(0.0, 1.0)


def _blur(x: torch.Tensor, generator, p: float = 0.5, max_sigma: float = 1.5) -> torch.Tensor:
    """A Gaussian blur of random width on about ``p`` of the samples (separable, 7 taps)."""
    n, c = x.shape[:2]
    sigma = _uniform((n,), 0.1, max_sigma, generator, x.device)
    on = (torch.rand(n, generator=generator) < p).to(x.device)
    taps = torch.arange(-3, 4, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-taps[None] ** 2 / (2 * sigma[:, None] ** 2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    identity = (taps == 0).to(x.dtype)[None].expand(n, -1)
    kernel = torch.where(on[:, None], kernel, identity).repeat_interleave(c, dim=0)  # (n*c, 7)
    flat = x.reshape(1, n * c, *x.shape[2:])
    flat = F.conv2d(F.pad(flat, (3, 3, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, 3, 3), mode="reflect"), kernel[:, None, :, None], groups=n * c)
    return flat.reshape(x.shape)


def _cutout(x: torch.Tensor, generator, p: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey out one square (a quarter to half the side) in about ``p`` of the samples; its mask."""
    n, _, h, w = x.shape
    side = (torch.rand(n, generator=generator) * 0.25 + 0.25) * min(h, w)
    y0 = (torch.rand(n, generator=generator) * (h - side)).long()
    x0 = (torch.rand(n, generator=generator) * (w - side)).long()
    on = torch.rand(n, generator=generator) < p
    rows = torch.arange(h)[None, :, None]
    cols = torch.arange(w)[None, None, :]
    side = side.long()[:, None, None]
    mask = ((rows >= y0[:, None, None]) & (rows < y0[:, None, None] + side)
            & (cols >= x0[:, None, None]) & (cols < x0[:, None, None] + side) & on[:, None, None]).to(x.device)
    return torch.where(mask[:, None], torch.full_like(x, 0.5), x), mask


def strong_view(x: torch.Tensor, generator: torch.Generator, *, stain: float = 0.05,
                colour: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """The strong view of a batch in [0, 1]: stain (HED) jitter, brightness / contrast jitter,
    Gaussian blur, cutout. Geometry is unchanged, so pixel ``(i, j)`` of the view is pixel ``(i, j)``
    of ``x`` and pseudo-labels of ``x`` apply to it, except under the cutout.

    Parameters
    ----------
    x : Tensor of shape (n, 3, H, W), float in [0, 1]
    generator : torch.Generator
        Every random draw comes from it (CPU), so a seeded fit is reproducible.
    stain, colour : float
        Jitter amplitudes: stain densities scaled by ``1 ± stain`` and shifted by ``± stain``;
        brightness and contrast factors in ``1 ± colour``.

    Returns
    -------
    view : Tensor of shape (n, 3, H, W)
    cut : Tensor of bool of shape (n, H, W)
        The pixels cutout greyed out (no pseudo-label applies there).
    """
    view = _hed_jitter(x, stain, generator) if x.shape[1] == 3 else x
    n = x.shape[0]
    factors = _uniform((n, 2, 1, 1, 1), 1 - colour, 1 + colour, generator, x.device)
    mean = view.mean(dim=(1, 2, 3), keepdim=True)
    view = (((view - mean) * factors[:, 1] + mean) * factors[:, 0]).clamp(0.0, 1.0)
    view = _blur(view, generator)
    return _cutout(view, generator)


def pseudo_labels(logits: torch.Tensor, confidence: float, ignore_index: int) -> torch.Tensor:
    """Most probable class per pixel where its probability is >= ``confidence``, else ``ignore_index``.

    Parameters
    ----------
    logits : Tensor of shape (n, C, H, W)
    confidence : float in [0, 1]
    ignore_index : int

    Returns
    -------
    Tensor of int64 of shape (n, H, W)
    """
    top, label = torch.softmax(logits.float(), dim=1).max(dim=1)
    return torch.where(top >= confidence, label, torch.full_like(label, ignore_index))


def pseudo_label_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Cross-entropy on the pseudo-labelled pixels, divided by *all* pixels (FixMatch's normalisation:
    few confident pixels weigh little, so an unsure network is not pushed by its own noise)."""
    if not bool((targets != ignore_index).any()):
        return logits.sum() * 0.0
    total = F.cross_entropy(logits.float(), targets, ignore_index=ignore_index, reduction="sum")
    return total / targets.numel()
