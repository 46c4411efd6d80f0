"""Segmentation networks that return per-pixel logits and a patch descriptor.

Both networks share one interface, which is what :class:`focal_al.estimator.SegmentationNet`
relies on: ``forward(x) -> (logits, descriptor)`` with ``logits`` of shape ``(N, C, H, W)`` and
``descriptor`` of shape ``(N, descriptor_dim)``, the channel-wise spatial mean of the encoder's
bottleneck output; the attributes ``in_channels``, ``n_classes``, ``depth``, ``size_multiple``
(input sides must be multiples of it) and ``descriptor_dim``; and ``forward_maps(x) -> (logits,
bottleneck map)`` for scoring patches from whole-image maps.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["Block", "EDConvNet", "FCN", "fold_batchnorm"]


class Block(nn.Sequential):
    """(3x3 convolution, BatchNorm, ReLU) x 2, the building block of Fig. 2.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in and out; both convolutions output ``out_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int):
        # No bias: BatchNorm's shift makes a convolution bias redundant.
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def _check_positive_int(name: str, value, minimum: int = 1) -> list[str]:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        return [f"'{name}' must be an int >= {minimum}. Got {value!r} instead."]
    return []


class _Encoder(nn.Module):
    """Encoder blocks of width w, 2w, 4w, 8w, 8w, ... with 2x2 max-pooling between them."""

    def __init__(self, in_channels: int, width: int, depth: int):
        super().__init__()
        # Widths double per level and stop growing at 8w, as in Fig. 2 (64 ... 512, 512).
        self.widths = [width * min(2**i, 8) for i in range(depth + 1)]
        channels = [in_channels] + self.widths
        self.blocks = nn.ModuleList(Block(channels[i], channels[i + 1]) for i in range(depth + 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, block in enumerate(self.blocks):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            features.append(x)
        return features


class _SegmentationModule(nn.Module):
    """Shared argument checks, input-size check and descriptor of the networks below."""

    def __init__(self, in_channels: int, n_classes: int, width: int, depth: int, name: str):
        super().__init__()
        problems = (
            _check_positive_int("in_channels", in_channels)
            + _check_positive_int("n_classes", n_classes, 2)
            + _check_positive_int("width", width)
            + _check_positive_int("depth", depth)
        )
        if problems:
            raise ValueError(f"Invalid arguments to {name}: " + " ".join(problems))
        self.in_channels = in_channels
        self.n_classes = n_classes
        self.width = width
        self.depth = depth
        self.size_multiple = 2**depth
        self.encoder = _Encoder(in_channels, width, depth)
        self.descriptor_dim = self.encoder.widths[-1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(N, n_classes, H, W)`` and descriptor ``(N, descriptor_dim)`` of ``x`` ``(N, C, H, W)``."""
        logits, bottleneck = self.forward_maps(x)
        return logits, bottleneck.mean(dim=(2, 3))

    def forward_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(N, n_classes, H, W)`` and the bottleneck map ``(N, descriptor_dim, H / 2**depth, W / 2**depth)``."""
        return self.decode(self.encode(x))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature maps of ``x``, one per level, the bottleneck last."""
        self._check_input(x)
        return self.encoder(x)

    def decode(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and bottleneck map from :meth:`encode`'s features: ``forward_maps`` without the encoder,
        so that MC-dropout passes after the encoder share one encoder output."""
        raise NotImplementedError

    def _check_input(self, x: torch.Tensor) -> None:
        problems = []
        if x.ndim != 4:
            problems.append(f"x must be 4-D (N, C, H, W); got shape {tuple(x.shape)}.")
        else:
            if x.shape[1] != self.in_channels:
                problems.append(f"x has {x.shape[1]} channels; the network expects {self.in_channels}.")
            bad = [f"{n}={s}" for n, s in zip("HW", x.shape[2:]) if s % self.size_multiple]
            if bad:
                problems.append(
                    f"the spatial size must be a multiple of 2**depth = {self.size_multiple} "
                    f"(depth={self.depth}); got {', '.join(bad)}. Pad the input (reflect) or crop it."
                )
        if problems:
            raise ValueError(f"Invalid input to {type(self).__name__}: " + " ".join(problems))


class EDConvNet(_SegmentationModule):
    """The encoder-decoder ConvNet of FocAnnot (Fig. 2): a U-Net with bilinear upsampling.

    Parameters
    ----------
    in_channels : int, default=3
        Channels of the input image.
    n_classes : int, default=2
        Classes predicted per pixel (at least 2).
    width : int, default=64
        Kernels of the first block (``w``); the encoder has blocks of width w, 2w, 4w, 8w, 8w
        (widths stop growing at 8w when ``depth`` > 4).
    depth : int, default=4
        Number of 2x2 max-pooling steps; input sides must be multiples of ``2**depth``.
    dropout : float, default=0.0
        Channel dropout (``Dropout2d``) on the bottleneck before the decoder, as in Bayesian
        SegNet: with ``dropout > 0`` the estimator can sample predictions with dropout on (MC
        dropout, ``SegmentationNet(mc_samples=T)``). 0 (default) adds nothing to the network.

    Attributes
    ----------
    descriptor_dim : int
        Length of the descriptor, the bottleneck width: ``8 * width`` for ``depth`` >= 3,
        ``width * 2**depth`` below.
    size_multiple : int
        ``2**depth``.

    Notes
    -----
    The decoder mirrors the encoder: at each level the feature map is upsampled bilinearly (x2),
    concatenated with the encoder output of the same level and passed through a block whose width is
    the encoder width one level up (``8w+8w -> 4w``, ``4w+4w -> 2w``, ``2w+2w -> w``, ``w+w -> w``),
    then a 1x1 convolution gives the class logits. ``forward`` returns ``(logits, descriptor)``:
    logits of shape ``(N, n_classes, H, W)`` and descriptor of shape ``(N, descriptor_dim)``, the
    channel-wise spatial mean of the bottleneck (the second "Block(512)" of Fig. 2 at w = 64).
    """

    def __init__(self, in_channels: int = 3, n_classes: int = 2, width: int = 64, depth: int = 4,
                 dropout: float = 0.0):
        super().__init__(in_channels, n_classes, width, depth, "EDConvNet")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"Invalid arguments to EDConvNet: 'dropout' must be a float in [0, 1). Got {dropout!r} instead.")
        self.dropout = nn.Dropout2d(float(dropout)) if dropout else nn.Identity()
        widths = self.encoder.widths
        decoder = []
        current = widths[-1]
        for level in range(depth - 1, -1, -1):
            out = widths[max(level - 1, 0)]
            decoder.append(Block(current + widths[level], out))
            current = out
        self.decoder = nn.ModuleList(decoder)
        self.head = nn.Conv2d(current, n_classes, 1)

    def decode(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        bottleneck = features[-1]
        y = self.dropout(bottleneck)
        for block, skip in zip(self.decoder, reversed(features[:-1])):
            y = F.interpolate(y, size=skip.shape[2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([skip, y], dim=1))
        return self.head(y), bottleneck


class FCN(_SegmentationModule):
    """A plain fully-convolutional network: the encoder of :class:`EDConvNet`, upsampling, no skips.

    A simplified stand-in for the FCN of Suggestive Annotation (Yang et al., MICCAI 2017), used by
    the SA baseline: same interface as :class:`EDConvNet`, but the decoder only upsamples
    (bilinear, x2) and refines with one block per level, with no skip concatenation.

    Parameters
    ----------
    in_channels : int, default=3
        Channels of the input image.
    n_classes : int, default=2
        Classes predicted per pixel (at least 2).
    width : int, default=64
        Kernels of the first encoder block; see :class:`EDConvNet`.
    depth : int, default=4
        Number of 2x2 max-pooling steps; input sides must be multiples of ``2**depth``.

    Notes
    -----
    ``forward(x)`` returns ``(logits (N, n_classes, H, W), descriptor (N, descriptor_dim))``, the
    descriptor being the channel-wise spatial mean of the encoder output.
    """

    def __init__(self, in_channels: int = 3, n_classes: int = 2, width: int = 64, depth: int = 4):
        super().__init__(in_channels, n_classes, width, depth, "FCN")
        widths = self.encoder.widths
        decoder = []
        current = widths[-1]
        for level in range(depth - 1, -1, -1):
            out = widths[max(level - 1, 0)]
            decoder.append(Block(current, out))
            current = out
        self.decoder = nn.ModuleList(decoder)
        self.head = nn.Conv2d(current, n_classes, 1)

    def decode(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        bottleneck = features[-1]
        y = bottleneck
        for block in self.decoder:
            y = block(F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False))
        return self.head(y), bottleneck


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """An inference copy of ``module`` with each BatchNorm folded into the convolution before it.

    In eval mode a BatchNorm is an affine map per channel, so a convolution followed by one is a
    single convolution with rescaled weights and a bias: the same outputs up to float32 rounding,
    with one pass over each feature map fewer (scoring 1.13x faster on one CPU thread,
    ``benchmarks/bench_speed.py``). Pairs are found inside every ``nn.Sequential`` (each
    :class:`Block`); anything else is copied as it is. The copy is in eval mode, keeps the
    parameters' memory format, and shares nothing with ``module``, which is left untouched.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    torch.nn.Module
    """
    folded = copy.deepcopy(module).eval()
    channels_last = any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last)
                        and not p.is_contiguous() for p in folded.parameters())
    for sequence in folded.modules():
        if not isinstance(sequence, nn.Sequential):
            continue
        for i in range(len(sequence) - 1):
            conv, norm = sequence[i], sequence[i + 1]
            if (type(conv) is nn.Conv2d and type(norm) is nn.BatchNorm2d and norm.track_running_stats
                    and norm.running_mean is not None):
                sequence[i] = fuse_conv_bn_eval(conv, norm)
                sequence[i + 1] = nn.Identity()
    if channels_last:
        folded.to(memory_format=torch.channels_last)
    return folded
