"""Per-round pool scores: the arrays every query criterion reads (numpy only, no torch)."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np


def _read_only(array) -> np.ndarray:
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True)
class PoolScores:
    """What one pass of the network over a pool yields, per sample (patch or whole image).

    Parameters
    ----------
    entropy : ndarray of shape (n_samples,)
        Mean pixel entropy, ``-sum_j p_j log p_j`` averaged over the sample's pixels (IU, Eq. 2).
    margin : ndarray of shape (n_samples,)
        Mean pixel margin between the two most probable classes (small = uncertain).
    least_confidence : ndarray of shape (n_samples,)
        Mean of ``1 - max_j p_j`` over the sample's pixels.
    descriptors : ndarray of shape (n_samples, d)
        Channel-wise average of the encoder's bottleneck output.
    extras : mapping of str to ndarray of shape (n_samples, ...)
        Further per-sample arrays (for example ensemble disagreement for Suggestive Annotation).
    """

    entropy: np.ndarray
    margin: np.ndarray
    least_confidence: np.ndarray
    descriptors: np.ndarray
    extras: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.entropy)
        arrays = {
            "entropy": self.entropy,
            "margin": self.margin,
            "least_confidence": self.least_confidence,
            "descriptors": self.descriptors,
            **{f"extras[{k!r}]": v for k, v in self.extras.items()},
        }
        problems = [
            f"{name} has {len(np.asarray(a))} rows" for name, a in arrays.items() if len(np.asarray(a)) != n
        ]
        if problems:
            raise ValueError(
                f"PoolScores arrays must all have one row per sample ({n}, from entropy); "
                + ", ".join(problems) + "."
            )
        if np.ndim(self.descriptors) != 2:
            raise ValueError(
                f"PoolScores.descriptors must be 2-D (n_samples, d). Got shape {np.shape(self.descriptors)}."
            )
        # Criteria share these arrays within a round: read-only views make an in-place edit by one
        # criterion an error instead of a silent change of what every later criterion reads.
        for name in ("entropy", "margin", "least_confidence", "descriptors"):
            object.__setattr__(self, name, _read_only(getattr(self, name)))
        object.__setattr__(self, "extras", MappingProxyType({k: _read_only(v) for k, v in self.extras.items()}))

    def __len__(self) -> int:
        return len(self.entropy)

    @classmethod
    def concatenate(cls, parts) -> "PoolScores":
        """The scores of consecutive chunks of a pool, as one (the chunks' extras must match)."""
        parts = list(parts)
        if len(parts) == 1:
            return parts[0]
        return cls(entropy=np.concatenate([p.entropy for p in parts]),
                   margin=np.concatenate([p.margin for p in parts]),
                   least_confidence=np.concatenate([p.least_confidence for p in parts]),
                   descriptors=np.concatenate([p.descriptors for p in parts]),
                   extras={k: np.concatenate([p.extras[k] for p in parts]) for k in parts[0].extras})

    def take(self, indices) -> "PoolScores":
        """The scores of a subset of samples, in the order of ``indices``."""
        indices = np.asarray(indices)
        return PoolScores(
            entropy=self.entropy[indices],
            margin=self.margin[indices],
            least_confidence=self.least_confidence[indices],
            descriptors=self.descriptors[indices],
            extras={k: v[indices] for k, v in self.extras.items()},
        )
