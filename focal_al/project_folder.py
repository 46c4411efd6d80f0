"""The annotation project's folder: its format, validation, locking and atomic writes.

:mod:`focal_al.project` holds the commands; this module owns what is on disk. Layout of a project
folder::

    project.json          configuration, written once by init: images (absolute paths, SHA-256,
                          sizes, role), patch geometry, scale, strategy, network
    state.json            the commit point: rounds (asked / answered pool rows), label and weight
                          files in use
    pool.h5               the PatchStore of the pool images at the network's scale
    labels/<name>.<g>.png full-resolution class labels (0 background, 1 gland, 255 not annotated)
    validation/<name>.png full-resolution labels of the held-out validation images
    .lock                 held (flock) by a command that commits, so that two cannot interleave
    weights/net.<g>.safetensors  the network's weights (focal_al.weights; older .pt files are read)
    rounds/round-NNN/     the exports of round NNN: regions.csv, geojson/, napari/, overview/, crops/

Every command writes new files under new names, then replaces ``state.json`` atomically: a
command killed at any point leaves the project as it was (files it had written are unreferenced
and removed by the next command), and running it again continues. Coordinates in every file are
pixels of the original images (level 0 of a slide), whatever ``scale`` the network works at.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from focal_al.annotations import AnnotationError
from focal_al.files import readable, remove_stale_temporaries

FORMAT = "focal_al.project"


FORMAT_VERSION = 1


IGNORE = 255


_IMAGE_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".svs", ".ndpi", ".scn")


#: Stems that mark a mask beside its image in a folder (``img01_label.png`` next to ``img01.png``).
_MASK_SUFFIXES = ("_label", "_labels", "_mask", "_masks", "_anno", "_annotation", "_gt")


#: The names of the files and folders a project writes (so that clean-up touches nothing else).
OWN_FILE = re.compile(r"^(?P<stem>.+)\.(?P<generation>\d+)\.(?P<suffix>png|pt|safetensors)$")


ROUND_FOLDER = re.compile(r"^round-\d{3,}$")


TEMPORARY = re.compile(r"^\..+\.tmp$")


class ProjectError(ValueError):
    """A project folder, or a request on it, that cannot be carried out as it stands."""


class ImageChangedError(ProjectError):
    """An image file differs from the one the project was initialised with."""


#: Files larger than this (whole-slide images) are fingerprinted by their size, first and last
#: ``_FINGERPRINT_BYTES``: hashing a lab's gigabytes of slides at every command would take minutes.
_FULL_HASH_LIMIT = 64 << 20


_FINGERPRINT_BYTES = 16 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    size = Path(path).stat().st_size
    with open(path, "rb") as fh:
        if size <= _FULL_HASH_LIMIT:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        else:
            digest.update(f"size {size}".encode())
            for start in (0, size - _FINGERPRINT_BYTES):  # read in 1 MiB blocks: no 16 MiB buffers
                fh.seek(start)
                for _ in range(_FINGERPRINT_BYTES >> 20):
                    digest.update(fh.read(1 << 20))
    return digest.hexdigest()


def is_slide(path: Path) -> bool:
    """A whole-slide image: an SVS file, or a TIFF with a pyramid (more than one level)."""
    suffix = path.suffix.lower()
    if suffix in (".svs", ".ndpi", ".scn"):
        return True
    if suffix not in (".tif", ".tiff"):
        return False
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0] if tif.series else None
            return bool(series is not None and (len(series.levels) > 1 or tif.pages[0].subifds))
    except Exception:  # unreadable: the image reader names the problem
        return False


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        if img.format != "PNG":
            raise ValueError(f"it is a {img.format} file, not a PNG")
        img.load()  # a truncated file fails here, not later as black pixels
        return np.asarray(img)


def read_json(path: Path):
    """A project file's JSON, or a ProjectError naming the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProjectError(f"Project file '{path}' is missing; restore it from a backup.") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ProjectError(f"Project file '{path}' is damaged (truncated or not JSON: {err}); restore it from a "
                           "backup.") from err


def check_schema(path: Path, data, schema: dict, where: str = "") -> None:
    """Refuse a project file whose keys or types are not the format's, naming the file and the key."""
    if not isinstance(data, dict):
        raise ProjectError(f"Project file '{path}' is damaged: {where or 'the file'} is a {type(data).__name__}, "
                           "expected a JSON object. Restore it from a backup.")
    for key, kind in schema.items():
        if key not in data:
            raise ProjectError(f"Project file '{path}' is damaged: key {where + key!r} is missing. Restore it from a "
                               "backup.")
        value = data[key]
        if isinstance(kind, dict):
            check_schema(path, value, kind, f"{where}{key}.")
        elif isinstance(kind, list):
            if not isinstance(value, list):
                raise ProjectError(f"Project file '{path}' is damaged: {where + key!r} is a {type(value).__name__}, "
                                   "expected a list. Restore it from a backup.")
            for k, item in enumerate(value):
                if isinstance(kind[0], dict):
                    check_schema(path, item, kind[0], f"{where}{key}[{k}].")
                elif not _is(item, kind[0]):
                    raise ProjectError(f"Project file '{path}' is damaged: {where}{key}[{k}] is {item!r}, expected "
                                       f"{kind[0].__name__}. Restore it from a backup.")
        elif not _is(value, kind):
            raise ProjectError(f"Project file '{path}' is damaged: {where + key!r} is {value!r}, expected "
                               f"{getattr(kind, '__name__', kind)}. Restore it from a backup.")


def _is(value, kind) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is _OPTIONAL_WEIGHTS:
        return value is None or (isinstance(value, dict) and isinstance(value.get("file"), str)
                                 and _is(value.get("steps"), int) and _is(value.get("labels_generation"), int))
    return isinstance(value, kind)


_OPTIONAL_WEIGHTS = object()


CONFIG_SCHEMA = {
    "images": [{"name": str, "path": str, "sha256": str, "height": int, "width": int, "role": str}],
    "patch_size": int, "overlap": float, "scale": float, "strategy": str, "strategy_params": dict,
    "network": {"width": int, "depth": int, "lr": float, "batch_size": int, "train_steps": int},
    "seed": int, "mask_suffix": str,
}


STATE_SCHEMA = {
    "generation": int, "labels": dict, "labels_generation": int, "initial": [int],
    "rounds": [{"round": int, "strategy": str, "strategy_params": dict, "asked": [int], "scores": [float],
                "answered": [int]}],
    "weights": _OPTIONAL_WEIGHTS,
}


def list_images(sources, mask_suffix: str) -> dict:
    """Image files named by ``sources`` (files or folders), keyed by stem, in natural order."""
    from focal_al.datasets import _natural_key

    files = {}
    for source in sources:
        source = Path(source)
        if source.is_dir():
            found = [p for p in sorted(source.iterdir())
                     if p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith(".")
                     and not (mask_suffix and p.stem.endswith(mask_suffix))]
            # A folder of images with their masks beside them: <stem>_label.png etc. are not images.
            stems = {p.stem for p in found}
            found = [p for p in found if not any(p.stem.endswith(s) and p.stem[: -len(s)] in stems
                                                 for s in _MASK_SUFFIXES)]
        elif source.is_file():
            found = [source]
        else:
            raise FileNotFoundError(f"Image source '{source}' is neither a file nor a folder.")
        for path in found:
            if path.stem in files and files[path.stem].resolve() != path.resolve():
                raise ProjectError(
                    f"Two images share the name {path.stem!r}: '{files[path.stem]}' and '{path}'; "
                    f"image names (file stems) must be unique."
                )
            files[path.stem] = path
    if not files:
        raise FileNotFoundError(f"No images ({', '.join(_IMAGE_SUFFIXES)}) in {[str(s) for s in sources]}.")
    return {k: files[k] for k in sorted(files, key=_natural_key)}


def match_masks(folder, names, mask_suffix: str, what: str) -> tuple:
    """Mask files of ``folder`` keyed by the image they annotate (``<name><mask_suffix>.<ext>``), and the others."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"The {what} folder '{folder}' does not exist.")
    found, unknown = {}, []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in _IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        stem = path.stem
        if mask_suffix:
            if not stem.endswith(mask_suffix):
                continue
            stem = stem[: -len(mask_suffix)]
        if stem in names:
            found[stem] = path
        else:
            unknown.append(path.name)
    if unknown and not found:
        hint = (" (pass --mask-suffix \"\" if the masks are named exactly like their images)" if mask_suffix else
                next((f" (pass --mask-suffix {s} if the masks are named <image>{s}.png)" for s in _MASK_SUFFIXES
                      if any(Path(u).stem.endswith(s) for u in unknown)), ""))
        raise AnnotationError(
            f"No file in the {what} folder '{folder}' matches a project image: found {unknown[:5]}, "
            f"expected '<image name>{mask_suffix}.png' for images such as {list(names)[:3]}{hint}."
        )
    lossy = [p.name for p in found.values() if p.suffix.lower() in (".jpg", ".jpeg")]
    if lossy:
        raise AnnotationError(
            f"The {what} folder '{folder}' holds JPEG masks {lossy[:5]}: JPEG compression invents label values along "
            f"every edge. Export the masks as PNG (or TIFF, BMP)."
        )
    return found, unknown


@contextlib.contextmanager
def building(path: Path):
    """Yield a new project folder under a hidden temporary name next to ``path``; when the block ends
    it is flushed and renamed into place, and on any error removed: ``path`` never holds half a project."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = readable(Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)), directory=True)
    try:
        (tmp / "labels").mkdir()
        (tmp / "validation").mkdir()
        yield tmp
        fsync_tree(tmp)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_project_files(folder: Path, config: dict, *, labels=None, initial=()) -> None:
    """A new project's ``project.json`` and its first ``state.json``."""
    state = {"format": f"{FORMAT}.state", "generation": 0, "labels": dict(labels or {}), "labels_generation": 0,
             "initial": list(initial), "rounds": [], "weights": None}
    write_json(folder / "project.json", config)
    write_json(folder / "state.json", state)


@contextlib.contextmanager
def locked(path: Path, *, exclusive: bool):
    """Hold the project's advisory lock (exclusive to commit, shared to read), or refuse at once."""
    with open(Path(path) / ".lock", "a") as lock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks, commands must not overlap
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(lock, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ProjectError(
                    f"Another focal-al command is working on project '{path}'; run this one when it ends."
                ) from None
        yield


def reading_command(method):
    """Run a command that only reads, under a shared lock, on the state as it is now: a committing
    command beside it would otherwise delete the label files it is reading."""

    @functools.wraps(method)
    def shared(self, *args, **kwargs):
        with locked(self.path, exclusive=False):
            state = read_json(self.path / "state.json")
            check_schema(self.path / "state.json", state, STATE_SCHEMA)
            self.state = state
            return method(self, *args, **kwargs)

    return shared


def committing_command(method):
    """Run a command that commits with the project locked, on the state it was opened with.

    Two commands committing at once would each replace ``state.json`` with their own successor of
    the same state, and one of them would be lost.
    """

    @functools.wraps(method)
    def under_lock(self, *args, **kwargs):
        with locked(self.path, exclusive=True):
            on_disk = json.loads((self.path / "state.json").read_text(encoding="utf-8"))
            if on_disk.get("generation") != self.state["generation"]:
                raise ProjectError(
                    f"Project '{self.path}' was changed by another command since it was opened here; open it again."
                )
            return method(self, *args, **kwargs)

    return under_lock


def atomic_write_bytes(path: Path, data: bytes) -> None:
    from focal_al.bench.records import atomic_write_bytes

    atomic_write_bytes(path, data)


def write_json(path: Path, obj) -> None:
    from focal_al.bench.records import atomic_write_json

    atomic_write_json(path, obj)


def fsync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` to disk before it is renamed into place."""
    if os.name != "posix":
        return
    for root, dirs, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                os.fsync(fh.fileno())
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

