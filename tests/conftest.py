"""Shared fixtures: where the real data lives (tests needing it are skipped when it is absent)."""
import os
from pathlib import Path

import pytest

# The repository sits next to shared/ (``<work>/main/tests`` -> ``<work>/shared/data``).
_DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir():
    """The shared data folder: ``$FOCAL_AL_DATA_DIR`` or ``../shared/data``; skip if absent."""
    path = Path(os.environ.get("FOCAL_AL_DATA_DIR", _DEFAULT_DATA_DIR))
    if not path.is_dir():
        pytest.skip(f"real data folder {path} not found (set FOCAL_AL_DATA_DIR to point at it)")
    return path


@pytest.fixture(scope="session")
def glas_dir(data_dir):
    """The full GlaS release (165 PNG pairs + Grade.csv); skip if absent."""
    path = data_dir / "glas"
    if not (path / "train_1.png").is_file():
        pytest.skip(f"GlaS data not found in {path}")
    return path


@pytest.fixture(scope="session")
def glas_bmp_dir(data_dir):
    """Two original GlaS release BMP pairs (train_1, testA_1); skip if absent."""
    path = data_dir / "glas-bmp-sample"
    if not (path / "train_1.bmp").is_file():
        pytest.skip(f"GlaS BMP sample not found in {path}")
    return path


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests run torch on one intra-op thread (subprocesses get ``OMP_NUM_THREADS=1`` where they
    start): tiny tensors gain nothing from threads, and on a busy 2-core machine two OpenMP
    threads made a tiny fit 100x slower. The in-process and subprocess runs of the resume tests
    then also sum in the same order."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
