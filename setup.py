"""focal-al: patch-wise active learning for cell and gland image segmentation (FocAnnot)."""
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
SLIDES = ["tiffslide>=2.4"]
DISTRIBUTED = ["dask[distributed]>=2024.1", "safetensors>=0.4"]

setup(
    name="focal-al",
    version="0.1.0",
    description="Patch-wise active learning for intensive cell and gland image segmentation (FocAnnot).",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["focal_al", "focal_al.bench", "focal_al_plugins"],
    package_dir={"focal_al_plugins": "plugins"},
    install_requires=[
        "numpy>=1.24",
        "torch>=2.1",
        "skorch>=1.0",
        # 0.4.2.1 pins skorch==0.9.0, which is broken with current torch and scikit-learn; 0.4.1's
        # strategy convention (a strategy returns indices) is the one our strategies follow.
        "modAL-python==0.4.1",
        "scikit-learn>=1.3",
        "POT>=0.9",
        "h5py>=3.8",
        "click>=8.1",
        "Pillow>=10",
        "tifffile>=2023.1",
        "scipy>=1.10",
        "scikit-image>=0.21",
        "matplotlib>=3.7",
        "shapely>=2.0",
        "tqdm>=4.64",
    ],
    extras_require={
        # Whole-slide images (focal_al.slides) and scoring on a Dask cluster (focal_al.distributed).
        "slides": SLIDES,
        "distributed": DISTRIBUTED,
        "test": ["pytest>=7", "hypothesis>=6.80", "geojson>=3.0", *SLIDES, *DISTRIBUTED],
    },
    entry_points={
        "console_scripts": ["focal-al = focal_al.cli:main"],
        "focal_al.criteria": ["builtin = focal_al_plugins.criteria"],
        "focal_al.strategies": ["builtin = focal_al_plugins.strategies"],
    },
)
