"""Files the tools write: readable by others as the umask allows, and no litter from killed runs.

Temporary files (``tempfile.mkstemp`` / ``mkdtemp``: mode 0600 / 0700) become the output by a
rename, so without :func:`readable` every report, store and project file would be its owner's
alone, whatever the umask; colleagues on a shared server could not read a report or annotate.
A run killed mid-write leaves its hidden temporary (``.<name>.<random>.tmp``) behind:
:func:`remove_stale_temporaries` clears the old ones of an output before it is written again.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

__all__ = ["readable", "remove_stale_temporaries", "STALE_SECONDS"]

#: A temporary file untouched for this long belongs to a run that was killed (a live one writes on).
STALE_SECONDS = 15 * 60


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def readable(path, *, directory: bool = False):
    """Give ``path`` the mode a plain ``open`` / ``mkdir`` would have under the current umask."""
    if os.name == "posix":
        os.chmod(path, (0o777 if directory else 0o666) & ~_umask())
    return path


def remove_stale_temporaries(output) -> list:
    """Remove what killed runs left while writing ``output`` (``.<name>.*.tmp`` beside it, older than
    :data:`STALE_SECONDS`); return the paths of fresher ones, which another run may still be writing.

    Parameters
    ----------
    output : str or path-like
        The file or folder about to be written.

    Returns
    -------
    list of pathlib.Path
        Temporaries left in place.
    """
    output = Path(output)
    if not output.parent.is_dir():
        return []
    kept = []
    now = time.time()
    for tmp in output.parent.glob(f".{output.name}.*tmp"):
        try:
            stale = now - tmp.stat().st_mtime > STALE_SECONDS
        except FileNotFoundError:
            continue
        if not stale:
            kept.append(tmp)
        elif tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    return kept
