"""focal-al: patch-wise active learning for intensive cell and gland image segmentation.

The public names are imported lazily, so that ``import focal_al`` (and ``focal-al --help``) stays
instant: torch is loaded only when the estimator or the network is first used.
"""
from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "patch_grid": "patches",
    "partition": "patches",
    "stitch": "patches",
    "PatchStore": "store",
    "SegmentationDataset": "datasets",
    "load_glas": "datasets",
    "load_folder": "datasets",
    "make_synthetic": "datasets",
    "EDConvNet": "nets",
    "FCN": "nets",
    "SegmentationNet": "estimator",
    "PoolScores": "scores",
    "RevealedPixels": "cost",
    "PatchActiveLearner": "learner",
    "query_strategy": "registry",
    "AnnotationProject": "project",
    "load_slides": "slides",
    "ScoresFile": "scores_file",
    "score_pool_distributed": "distributed",
    "streaming_focannot": "streaming",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"focal_al.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'focal_al' has no attribute {name!r}")


def __dir__():
    return __all__
