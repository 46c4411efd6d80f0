"""How many CPU threads torch uses: one rule for every command and for the API.

OpenMP threads spin at barriers, so more threads than free cores is catastrophic on the small
operations of these networks: a ``project query`` beside one busy process took 219 s with torch's
default threads and 14 s with one thread (a 15x loss). The rule: ``OMP_NUM_THREADS`` where it is
set (a launcher's choice, e.g. Dask workers), else half the cores this process may run on, at
least 1. On a 2-core machine that is one thread, so a command beside another busy process is never
slower than with one thread (``benchmarks/bench_speed.py`` measures it). It is deterministic, so a
resumed bench run computes with the thread count it started with; ``--threads`` overrides it.
"""
from __future__ import annotations

import contextlib
import os

__all__ = ["default_threads", "check_threads", "set_process_threads", "threaded", "using_threads"]


def default_threads() -> int:
    """torch CPU threads by the rule above: ``OMP_NUM_THREADS``, else half the usable cores, at least 1."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env)
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


def check_threads(threads, name: str = "threads") -> int | None:
    """``threads`` as an int >= 1, ``"auto"`` as :func:`default_threads`, None kept (torch's setting)."""
    if threads is None:
        return None
    if isinstance(threads, str) and threads == "auto":
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"The '{name}' parameter must be an int >= 1, 'auto' or None. Got {threads!r} instead.")
    return threads


@contextlib.contextmanager
def using_threads(threads):
    """Run a block with torch on ``threads`` CPU threads (see :func:`check_threads`), then restore them."""
    import torch

    n = check_threads(threads)
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def threaded(method):
    """Decorate an estimator method to run on the estimator's ``threads`` (:func:`using_threads`)."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with using_threads(getattr(self, "threads", None)):
            return method(self, *args, **kwargs)
    return wrapper


def set_process_threads(threads=None) -> int:
    """Make ``threads`` (default: :func:`default_threads`) this process's choice: torch's thread count
    and ``OMP_NUM_THREADS``, which every ``SegmentationNet(threads="auto")`` here, and any process
    started from here (``bench --jobs``), then follows. What the command line's ``--threads`` does.

    Returns
    -------
    int
        The thread count set.
    """
    import torch

    n = default_threads() if threads is None else check_threads(threads, "--threads")
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    return n
