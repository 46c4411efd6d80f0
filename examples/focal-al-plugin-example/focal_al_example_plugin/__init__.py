"""An example focal-al plugin: the ``entropy-times-margin`` query criterion.

Installing this package makes the criterion available by name everywhere a built-in one is, e.g.
``query_strategy("focannot", uncertainty="entropy-times-margin")``: focal-al imports this module
through its entry point ``focal_al.criteria: example``, which runs the decorator below.
"""
import numpy as np

from focal_al.registry import register_criterion

__version__ = "0.1.0"


@register_criterion("entropy-times-margin")
def entropy_times_margin(scores, candidates, rng):
    """Mean pixel entropy times (1 - mean margin): uncertain patches whose two top classes are close."""
    entropy = np.asarray(scores.entropy, dtype=np.float64)[candidates]
    margin = np.asarray(scores.margin, dtype=np.float64)[candidates]
    return entropy * (1.0 - margin)
