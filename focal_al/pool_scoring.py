"""Scoring a pool of patches in one streaming pass: the arrays every query criterion reads.

:class:`PoolScoring` is the part of :class:`~focal_al.estimator.SegmentationNet` that turns a
pool into :class:`~focal_al.scores.PoolScores`: mean entropy, margin and least confidence per
patch, encoder descriptors, and on request the epistemic extras (test-time augmentation
disagreement, MC-dropout BALD, last-layer gradient embeddings). It relies on the estimator's
``_inference_module``, ``_batches``, ``_autocast`` and device handling.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from focal_al.scores import PoolScores
from focal_al.threads import threaded

__all__ = ["PoolScoring", "dihedral", "dihedral_inverse"]


def dihedral(t: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 flips / 90-degree rotations of the last two axes."""
    t = torch.rot90(t, k % 4, dims=(-2, -1))
    return torch.flip(t, dims=(-1,)) if k >= 4 else t


def dihedral_inverse(t: torch.Tensor, k: int) -> torch.Tensor:
    """Undo :func:`dihedral` ``k`` (maps predicted on a transformed input back to its frame)."""
    if k >= 4:
        t = torch.flip(t, dims=(-1,))
    return torch.rot90(t, -(k % 4), dims=(-2, -1))


class PoolScoring:
    """Pool scoring of a :class:`~focal_al.estimator.SegmentationNet` (a mixin)."""

    @staticmethod
    def _uncertainty(proba: torch.Tensor, valid: torch.Tensor | None = None):
        """Per-sample mean entropy, margin and least confidence of ``(n, C, H, W)`` probabilities."""
        entropy = torch.special.entr(proba).sum(dim=1)
        top = proba.topk(2, dim=1).values
        margin = top[:, 0] - top[:, 1]
        least = 1.0 - top[:, 0]
        if valid is None:
            return entropy.mean(dim=(1, 2)), margin.mean(dim=(1, 2)), least.mean(dim=(1, 2))
        return entropy[valid].mean(), margin[valid].mean(), least[valid].mean()

    @threaded
    def score_pool(self, X, *, batch_size: int | None = None) -> PoolScores:
        """Uncertainty scores and descriptors of a pool of patches, in one streaming pass.

        This is the exact per-patch mode (the default and only mode here): every patch is run
        through the network on its own, as in the paper; memory is bounded by one batch.

        Parameters
        ----------
        X : array-like of shape (N, C, H, W), uint8 or float
            The pool (a memmap, e.g. ``PatchStore.patches``, is read batch by batch).
        batch_size : int, optional
            Defaults to ``batch_size``.

        Returns
        -------
        PoolScores
            ``entropy`` (N,) mean pixel entropy (natural log, Eq. 2); ``margin`` (N,) mean of
            ``p_top1 - p_top2``; ``least_confidence`` (N,) mean of ``1 - max_j p_j``;
            ``descriptors`` (N, d) float32, the channel-wise mean of the bottleneck;
            ``extras["class_entropy"]`` (N, C), the mean over pixels of the pixel entropy times
            each class's probability; ``extras["predicted_foreground_fraction"]`` (N,), the share
            of pixels predicted as a class other than 0.
        """
        self._check_fitted("score_pool")
        batches = self._batches(X, batch_size, "score_pool")
        n = len(X)
        entropy = np.empty(n, dtype=np.float32)
        margin = np.empty(n, dtype=np.float32)
        least = np.empty(n, dtype=np.float32)
        tta = np.empty(n, dtype=np.float32) if self.score_tta else None
        bald = np.empty(n, dtype=np.float32) if self.mc_samples else None
        module = self._inference_module()
        dropouts = self._dropout_layers(module) if self.mc_samples else []
        head_input, hook, out = [], None, {}
        if self.score_gradients:
            head = getattr(module, "head", None)
            if not isinstance(head, torch.nn.Conv2d) or head.kernel_size != (1, 1):
                raise ValueError(
                    f"score_gradients=True needs a module whose 'head' is a 1x1 Conv2d (EDConvNet); "
                    f"{type(module).__name__} has {type(head).__name__ if head is not None else 'no head'}."
                )
            hook = head.register_forward_hook(lambda _, args, output: head_input.append(args[0]))
        hooks = [] if hook is None else [hook]
        encoder = self._shared_encoder(module, dropouts) if bald is not None else None
        if encoder is not None:
            # The plain pass's encoder output is what the MC-dropout decoder passes start from.
            hooks.append(encoder.register_forward_hook(lambda _, args, output: out.setdefault("encoded", output)))
        try:
            self._score_batches(module, batches, n, entropy, margin, least, tta, bald, dropouts, head_input, out)
        finally:
            for h in hooks:
                h.remove()
        descriptors, gradients = out.get("descriptors"), out.get("gradients")
        extras = {"class_entropy": out["class_entropy"], "predicted_foreground_fraction": out["predicted_foreground"]}
        if tta is not None:
            extras["tta_disagreement"] = tta
        if bald is not None:
            extras["bald"] = bald
        if gradients is not None:
            extras["gradient_embedding"] = gradients
        return PoolScores(entropy=entropy, margin=margin, least_confidence=least, descriptors=descriptors,
                          extras=extras)

    def _score_batches(self, module, batches, n, entropy, margin, least, tta, bald, dropouts, head_input, out) -> None:
        """The one pass of :meth:`score_pool`: fills its arrays (and ``out``) batch by batch."""
        start = 0
        with torch.inference_mode():
            for xb in batches:
                head_input.clear()
                out.pop("encoded", None)
                with self._autocast():
                    logits, desc = module(xb)
                encoded = out.pop("encoded", None)
                proba = torch.softmax(logits.float(), dim=1)
                stop = start + len(xb)
                if head_input:
                    # d CE / d W_head under the predicted labels: (p - onehot) f, mean over pixels.
                    features = head_input[0].float()
                    residual = proba - F.one_hot(proba.argmax(dim=1), proba.shape[1]).permute(0, 3, 1, 2).float()
                    grad = torch.einsum("nchw,nfhw->ncf", residual, features) / (features.shape[2] * features.shape[3])
                    if "gradients" not in out:
                        out["gradients"] = np.empty((n, grad.shape[1] * grad.shape[2]), dtype=np.float32)
                    out["gradients"][start:stop] = grad.reshape(len(xb), -1).cpu().numpy()
                if tta is not None:
                    tta[start:stop] = self._tta_disagreement(module, xb, proba).cpu().numpy()
                if bald is not None:
                    bald[start:stop] = self._bald(module, xb, dropouts, encoded).cpu().numpy()
                h, m, lc = self._uncertainty(proba)
                if "class_entropy" not in out:
                    out["class_entropy"] = np.empty((n, proba.shape[1]), dtype=np.float32)
                    out["predicted_foreground"] = np.empty(n, dtype=np.float32)
                # Entropy weighted by each class's probability (ClaSP PE's class-specific uncertainty),
                # and the share of pixels predicted as any class but 0 (background).
                pixel_entropy = torch.special.entr(proba).sum(dim=1, keepdim=True)
                out["class_entropy"][start:stop] = (pixel_entropy * proba).mean(dim=(2, 3)).cpu().numpy()
                out["predicted_foreground"][start:stop] = (proba.argmax(dim=1) != 0).float().mean(dim=(1, 2)).cpu().numpy()
                entropy[start:stop] = h.cpu().numpy()
                margin[start:stop] = m.cpu().numpy()
                least[start:stop] = lc.cpu().numpy()
                if "descriptors" not in out:
                    out["descriptors"] = np.empty((n, desc.shape[1]), dtype=np.float32)
                out["descriptors"][start:stop] = desc.float().cpu().numpy()
                start = stop

    def _dropout_layers(self, module) -> list:
        layers = [m for m in module.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0]
        if isinstance(self.mc_samples, bool) or not isinstance(self.mc_samples, (int, np.integer)) or self.mc_samples < 2:
            raise ValueError(f"'mc_samples' must be 0 or an int >= 2. Got {self.mc_samples!r} instead.")
        if not layers:
            raise ValueError(
                f"mc_samples={self.mc_samples} needs dropout in the module, and {type(module).__name__} has "
                "none active: pass module__dropout=0.2 (for example) to SegmentationNet."
            )
        return layers

    def _shared_encoder(self, module, dropouts: list) -> torch.nn.Module | None:
        """The module's ``encoder`` when MC-dropout passes can share its output, else None.

        They can when the module can ``decode`` its ``encode``'s features and every dropout layer
        is past the encoder (EDConvNet's, on the bottleneck): the encoder then draws nothing at random.
        """
        encoder = getattr(module, "encoder", None)
        if hasattr(module, "encode") and hasattr(module, "decode") \
                and isinstance(encoder, torch.nn.Module) and not any(layer in dropouts for layer in encoder.modules()):
            return encoder
        return None

    def _bald(self, module, xb: torch.Tensor, dropouts: list, encoded=None) -> torch.Tensor:
        """Per-sample mean over pixels of H(mean_t p) - mean_t H(p) over MC-dropout passes.

        Given ``encoded``, the plain pass's encoder output (where :meth:`_shared_encoder` allows it),
        the T passes run only the decoder: the same numbers as T whole passes in about two thirds
        of their time (`benchmarks/bench_scoring.py`); without it, T whole passes.
        """
        import zlib

        seed = zlib.crc32(xb[:, :, ::4, ::4].cpu().numpy().tobytes())
        mean = None
        entropy = None
        with torch.random.fork_rng(devices=[xb.device] if xb.device.type == "cuda" else []):
            torch.manual_seed(seed)
            for layer in dropouts:
                layer.train()
            try:
                for _ in range(int(self.mc_samples)):
                    with self._autocast():
                        logits, _ = module(xb) if encoded is None else module.decode(encoded)
                    p = torch.softmax(logits.float(), dim=1)
                    h = torch.special.entr(p).sum(dim=1)
                    mean = p if mean is None else mean + p
                    entropy = h if entropy is None else entropy + h
            finally:
                for layer in dropouts:
                    layer.eval()
        t = float(self.mc_samples)
        mutual = torch.special.entr(mean / t).sum(dim=1) - entropy / t
        return mutual.clamp_(min=0.0).mean(dim=(1, 2))

    def _tta_disagreement(self, module, xb: torch.Tensor, proba: torch.Tensor) -> torch.Tensor:
        """Per-sample variance of the probabilities over the dihedral views, summed over classes."""
        views = range(8) if xb.shape[-1] == xb.shape[-2] else (0, 2, 4, 6)
        mean = torch.zeros_like(proba)
        square = torch.zeros_like(proba)
        for k in views:
            if k == 0:
                p = proba
            else:
                with self._autocast():
                    logits, _ = module(dihedral(xb, k))
                p = dihedral_inverse(torch.softmax(logits.float(), dim=1), k)
            mean += p
            square += p * p
        n_views = len(views)
        variance = (square / n_views - (mean / n_views) ** 2).clamp_(min=0.0)
        return variance.sum(dim=1).mean(dim=(1, 2))
