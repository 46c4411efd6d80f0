"""Annotation projects: a folder in which a person labels, round by round, the regions the learner asks for.

A project turns a folder of unlabelled images into rounds of FocAnnot queries answered by a person
(QuPath GeoJSON or label masks, see :mod:`focal_al.annotations`). Its loop is
:class:`focal_al.learner.PatchActiveLearner`: ``query`` picks patches, ``teach`` records the
imported labels; the project only keeps the learner's state between sessions, as data.

The folder's format (layout, schema, locks, atomic writes) is :mod:`focal_al.project_folder`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from focal_al.annotations import (
    OBJECT_CLASS,
    REGION_CLASS,
    AnnotationError,
    Region,
    draw_crop,
    draw_overview,
    feature_collection,
    mask_to_features,
    napari_shapes_csv,
    rasterise,
    read_geojson,
    read_label_mask,
    region_feature,
    regions_csv,
)
from focal_al.files import readable
from focal_al.project_folder import (
    FORMAT,
    FORMAT_VERSION,
    IGNORE,
    ImageChangedError,
    ProjectError,
    CONFIG_SCHEMA,
    OWN_FILE,
    ROUND_FOLDER,
    STATE_SCHEMA,
    TEMPORARY,
    atomic_write_bytes,
    building,
    check_schema,
    committing_command,
    fsync_tree,
    is_slide,
    list_images,
    locked,
    match_masks,
    png_bytes,
    read_json,
    read_png,
    reading_command,
    file_sha256,
    write_json,
    write_project_files,
)

__all__ = ["AnnotationProject", "ImportReport", "ProjectError", "ImageChangedError"]

#: Pools larger than this many patches are scored on Dask workers and queried with the streaming
#: FocAnnot, whatever ``query`` is told (one process holding every descriptor would not fit).
LARGE_POOL = 500_000
# A GeoJSON coordinate may sit on the image border (x == W); allow QuPath's float rounding beyond
# it, no more: a larger excess means another coordinate frame.
_FRAME_TOLERANCE = 1.0


@dataclass
class ImportReport:
    """What an import did.

    Attributes
    ----------
    answered : list of str
        Regions answered by this import.
    missing : list of str
        Regions asked and still unanswered after it.
    not_asked : list of str
        Annotations accepted but not used: region rectangles never asked (or answered before),
        files for images without open regions, objects outside every asked region.
    """

    answered: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    not_asked: list = field(default_factory=list)


def _seed(*parts) -> int:
    return int(np.random.default_rng([int(p) for p in parts]).integers(2**31 - 1))


def _scaled_shape(shape, scale: float) -> tuple:
    # The rule of SegmentationDataset.rescale, so that a project and a bench see the same pixels.
    h, w = shape
    return (max(1, round(h * scale)), max(1, round(w * scale))) if scale != 1.0 else (h, w)


def _resize_image(image: np.ndarray, shape) -> np.ndarray:
    from PIL import Image

    if tuple(image.shape[:2]) == tuple(shape):
        return image
    return np.asarray(Image.fromarray(image).resize((shape[1], shape[0]), Image.Resampling.BILINEAR))


def _sample_rows(n_out: int, n_in: int) -> np.ndarray:
    # Pixel i of the scaled image samples the original pixel under its centre: floor((i + 0.5) n_in / n_out).
    return ((2 * np.arange(n_out) + 1) * n_in) // (2 * n_out)


def _downsample_labels(labels: np.ndarray, shape) -> np.ndarray:
    return labels[np.ix_(_sample_rows(shape[0], labels.shape[0]), _sample_rows(shape[1], labels.shape[1]))]


class AnnotationProject:
    """An annotation project folder; open an existing one with ``AnnotationProject(path)``.

    Opening reads ``project.json`` and ``state.json`` and checks the SHA-256 of every image.

    Parameters
    ----------
    path : str or path-like
        The project folder, made by :meth:`create`.

    Attributes
    ----------
    path : pathlib.Path
    config : dict
        The configuration written by :meth:`create`.
    state : dict
        The committed state.
    """

    def __init__(self, path):
        self.path = Path(path)
        config_file = self.path / "project.json"
        if not config_file.is_file():
            raise FileNotFoundError(
                f"'{self.path}' is not a focal-al project: '{config_file}' is missing "
                f"(create one with `focal-al project init`)."
            )
        self.config = read_json(config_file)
        if self.config.get("format") != FORMAT or self.config.get("format_version") != FORMAT_VERSION:
            raise ProjectError(
                f"'{config_file}' has format {self.config.get('format')!r} version "
                f"{self.config.get('format_version')!r}; expected {FORMAT!r} version {FORMAT_VERSION}."
            )
        check_schema(config_file, self.config, CONFIG_SCHEMA)
        self.state = read_json(self.path / "state.json")
        if self.state.get("format") != f"{FORMAT}.state":
            raise ProjectError(
                f"'{self.path / 'state.json'}' has format {self.state.get('format')!r}; expected {FORMAT}.state."
            )
        check_schema(self.path / "state.json", self.state, STATE_SCHEMA)
        self._images = {entry["name"]: entry for entry in self.config["images"]}
        self._check_images()
        self._store = None
        self._check_rows()

    def _check_rows(self) -> None:
        """Every pool row the state names lies in the pool; every label file is one of its images'."""
        n = len(self.store)
        state_file = self.path / "state.json"
        named = [("initial", self.state["initial"])] + [
            (f"rounds[{k}].{key}", r[key]) for k, r in enumerate(self.state["rounds"]) for key in ("asked", "answered")]
        for where, rows in named:
            bad = [row for row in rows if not 0 <= row < n]
            if bad:
                raise ProjectError(f"'{state_file}' is damaged: {where} names pool rows {bad[:5]} outside the pool "
                                   f"[0, {n}). Restore the file from a backup.")
        unknown = [name for name in self.state["labels"] if name not in self._images]
        if unknown:
            raise ProjectError(f"'{state_file}' is damaged: labels of unknown images {unknown[:5]}.")

    # ------------------------------------------------------------------------------- creating

    @classmethod
    def create(
        cls,
        path,
        images,
        *,
        masks=None,
        validation_masks=None,
        mask_suffix="",
        patch_size=64,
        overlap=0.5,
        scale=1.0,
        strategy="focannot",
        strategy_params=None,
        width=16,
        depth=4,
        lr=1e-3,
        batch_size=16,
        train_steps=300,
        seed=0,
        level=None,
        mpp=None,
        min_tissue=0.5,
    ):
        """Create a project: partition the images into a patch pool and take complete masks as labels.

        The folder is built under a temporary name next to ``path`` and renamed into place when
        complete, so an interrupted ``create`` leaves nothing at ``path``.

        Parameters
        ----------
        path : str or path-like
            The new project folder; must not exist (or be empty).
        images : sequence of str or path-like
            Image files, or folders whose image files are all taken (name = file stem).
        masks : str or path-like, optional
            Folder of complete label masks (``<name><mask_suffix>.<ext>``, original size, 0 =
            background, positive = gland) of some pool images: those images start labelled.
        validation_masks : str or path-like, optional
            Folder of complete masks of images held out of the pool: ``status`` reports Dice on them.
        mask_suffix : str, default=""
            Suffix of the mask file stems, e.g. ``"_anno"`` (GlaS).
        patch_size : int, default=64
            Side of the regions (patches) at the network's scale; a multiple of ``2**depth``.
        overlap : float in [0, 1), default=0.5
            Overlap of neighbouring patches.
        scale : float in (0, 1], default=1.0
            Resolution the network works at (0.5 = half); exports stay in original pixels.
        strategy : str, default="focannot"
            A registered patch-level strategy.
        strategy_params : dict, optional
            Its keyword parameters (e.g. ``{"k": 3}``).
        width, depth : int, default=16, 4
            ED-ConvNet width and number of poolings.
        lr : float, default=1e-3
        batch_size : int, default=16
        train_steps : int, default=300
            Gradient steps per training.
        seed : int, default=0
            Seeds the network, the training batches and the queries.
        level, mpp : int or float, optional
            For whole-slide images (SVS, pyramidal TIFF): the pyramid level the network works at,
            or the resolution (micrometres per pixel) that picks it. The pool holds tissue patches
            only, read block by block (:func:`focal_al.slides.load_slides`); labels are kept at
            that level, and every export and import is in level-0 pixels (QuPath's frame).
        min_tissue : float, default=0.5
            Slides: the smallest tissue share of a patch in the pool.

        Returns
        -------
        AnnotationProject
        """
        from focal_al.datasets import _read_image
        from focal_al.patches import _check_overlap, _check_patch_size
        from focal_al.registry import check_strategy_values, strategy_info
        from focal_al.store import PatchStore

        path = Path(path)
        caller = "AnnotationProject.create"
        patch_size = _check_patch_size(patch_size, caller)
        overlap = _check_overlap(overlap, caller)
        for name, value, low in (("width", width, 1), ("depth", depth, 1), ("batch_size", batch_size, 1),
                                 ("train_steps", train_steps, 1), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"The '{name}' parameter of {caller} must be an int >= {low}. Got {value!r} instead.")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
            raise ValueError(f"The 'scale' parameter of {caller} must be a float in (0, 1]. Got {scale!r} instead.")
        if patch_size % 2**depth:
            raise ValueError(
                f"The 'patch_size' parameter of {caller} must be a multiple of 2**depth = {2**depth} "
                f"(the network pools {depth} times). Got {patch_size} instead."
            )
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"The 'lr' parameter of {caller} must be a positive float. Got {lr!r} instead.")
        if strategy_info(strategy).kind != "patch":
            raise ValueError(
                f"The 'strategy' parameter of {caller} must be a patch-level strategy (regions are "
                f"patches). Got {strategy!r}, an image-level strategy."
            )
        check_strategy_values(strategy, dict(strategy_params or {}), option_names={"k": "--clusters"})
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise FileExistsError(f"Project folder '{path}' already exists and is not empty.")

        files = list_images(images if isinstance(images, (list, tuple)) else [images], mask_suffix)
        names = list(files)
        slides = [n for n in names if is_slide(files[n])]
        if slides:
            if len(slides) != len(names):
                raise ProjectError(f"A project holds images or whole-slide images, not both: {slides[:3]} are slides, "
                                   f"{[n for n in names if n not in slides][:3]} are not.")
            if masks or validation_masks:
                raise ProjectError("Whole-slide projects start unlabelled: --masks and --validation-masks are for "
                                   "images; answer the slides' regions with `focal-al project import --geojson`.")
            if scale != 1.0:
                raise ProjectError(f"--scale is for images; a slide's resolution is chosen with --mpp or --level "
                                   f"(got --scale {scale}).")
            return cls._create_from_slides(path, files, patch_size=patch_size, overlap=overlap, level=level, mpp=mpp,
                                           min_tissue=min_tissue, config_rest=dict(
                                               strategy=strategy, strategy_params=dict(strategy_params or {}),
                                               network={"module": "ed-convnet", "width": int(width),
                                                        "depth": int(depth), "lr": float(lr),
                                                        "batch_size": int(batch_size),
                                                        "train_steps": int(train_steps)},
                                               seed=int(seed), mask_suffix=mask_suffix))
        if level is not None or mpp is not None:
            raise ProjectError("--level and --mpp choose a whole-slide image's resolution; these images are not "
                               "slides (use --scale).")
        validation = {}
        if validation_masks:
            validation = match_masks(validation_masks, names, mask_suffix, "validation masks")[0]
        if masks and validation:
            both = sorted(set(match_masks(masks, names, mask_suffix, "masks")[0]) & set(validation))
            if both:
                raise ProjectError(f"Image(s) {both[:5]} have a mask in both --masks and --validation-masks; an image "
                                   "is either labelled in the pool or held out to validate, not both.")
        pool_names = [n for n in names if n not in validation]
        if not pool_names:
            raise ProjectError("Every image has a validation mask; keep at least one image in the pool to annotate.")
        initial = match_masks(masks, pool_names, mask_suffix, "masks")[0] if masks else {}

        with building(path) as tmp:
            entries, scaled, labels_scaled, label_files = [], [], [], {}
            for name in names:
                image = _read_image(files[name])
                shape = image.shape[:2]
                role = "validation" if name in validation else "pool"
                entries.append({"name": name, "path": str(files[name].resolve()), "sha256": file_sha256(files[name]),
                                "height": int(shape[0]), "width": int(shape[1]), "role": role})
                if role == "validation":
                    labels = read_label_mask(validation[name], shape).astype(np.uint8)
                    (tmp / "validation" / f"{name}.png").write_bytes(png_bytes(labels))
                    continue
                small = _scaled_shape(shape, float(scale))
                scaled.append(_resize_image(image, small))
                if name in initial:
                    labels = read_label_mask(initial[name], shape).astype(np.uint8)
                    label_files[name] = f"labels/{name}.0.png"
                    (tmp / label_files[name]).write_bytes(png_bytes(labels))
                    labels_scaled.append(_downsample_labels(labels, small))
                else:
                    labels_scaled.append(np.full(small, IGNORE, dtype=np.uint8))
            store = PatchStore.build(tmp / "pool.h5", scaled, labels_scaled, pool_names,
                                     patch_size=patch_size, overlap=overlap, allow_padding=True)
            initial_rows = np.flatnonzero(np.isin(store.image_index, [pool_names.index(n) for n in initial]))
            config = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "images": entries,
                "patch_size": patch_size, "overlap": overlap, "scale": float(scale),
                "strategy": strategy, "strategy_params": dict(strategy_params or {}),
                "network": {"module": "ed-convnet", "width": int(width), "depth": int(depth), "lr": float(lr),
                            "batch_size": int(batch_size), "train_steps": int(train_steps)},
                "seed": int(seed), "mask_suffix": mask_suffix,
            }
            write_project_files(tmp, config, labels=label_files, initial=initial_rows.tolist())
        return cls(path)

    @classmethod
    def _create_from_slides(cls, path, files, *, patch_size, overlap, level, mpp, min_tissue, config_rest):
        """The slide branch of :meth:`create`: the pool from :func:`focal_al.slides.load_slides`."""
        from focal_al.datasets import max_image_pixels
        from focal_al.slides import load_slides, open_slide

        names = list(files)
        with building(path) as tmp:
            store = load_slides([files[n] for n in names], tmp / "pool.h5", patch_size=patch_size, overlap=overlap,
                                level=level, mpp=mpp, min_tissue=min_tissue, names=names)
            entries = []
            for i, name in enumerate(names):
                with open_slide(files[name]) as slide:
                    width, height = slide.dimensions
                frame = tuple(int(v) for v in store.image_shapes[i])
                if frame[0] * frame[1] > max_image_pixels():
                    raise ProjectError(
                        f"Slide '{files[name]}' at the level chosen is {frame[1]} x {frame[0]} pixels, above the "
                        f"{max_image_pixels():,} a project keeps labels for; choose a coarser level (--mpp, --level)."
                    )
                entries.append({"name": name, "path": str(files[name].resolve()), "sha256": file_sha256(files[name]),
                                "height": int(height), "width": int(width), "role": "pool", "kind": "slide",
                                "downsample": float(store.image_downsamples[i]), "frame": list(frame)})
            config = {"format": FORMAT, "format_version": FORMAT_VERSION, "images": entries,
                      "patch_size": patch_size, "overlap": overlap, "scale": 1.0, **config_rest}
            write_project_files(tmp, config)
        return cls(path)

    @classmethod
    def relocate(cls, path, images) -> "AnnotationProject":
        """Re-point a project at its images after they moved: found by name in ``images``, checked by checksum.

        Parameters
        ----------
        path : str or path-like
            The project folder.
        images : sequence of str or path-like
            Image files, or folders holding them (as at init).

        Returns
        -------
        AnnotationProject
        """
        path = Path(path)
        config_file = path / "project.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"'{path}' is not a focal-al project: '{config_file}' is missing.")
        config = read_json(config_file)
        check_schema(config_file, config, CONFIG_SCHEMA)
        files = list_images(images if isinstance(images, (list, tuple)) else [images], config["mask_suffix"])
        missing = [e["name"] for e in config["images"] if e["name"] not in files]
        if missing:
            raise ProjectError(f"The images {missing[:5]}{' ...' if len(missing) > 5 else ''} of project '{path}' are not "
                               f"in {[str(i) for i in (images if isinstance(images, (list, tuple)) else [images])]}; "
                               "nothing was changed.")
        changed = [f"{files[e['name']]}" for e in config["images"] if file_sha256(files[e["name"]]) != e["sha256"]]
        if changed:
            raise ImageChangedError(f"{changed[:5]} differ from the images project '{path}' was made from (another "
                                    "checksum); nothing was changed. Point it at the original files.")
        for entry in config["images"]:
            entry["path"] = str(files[entry["name"]].resolve())
        with locked(path, exclusive=True):
            write_json(config_file, config)
        return cls(path)

    # ------------------------------------------------------------------------------- reading

    def _check_images(self) -> None:
        for entry in self.config["images"]:
            file = Path(entry["path"])
            if not file.is_file():
                raise FileNotFoundError(
                    f"Image '{file}' of project '{self.path}' is missing (image {entry['name']!r}); the project "
                    f"reads the images where they were at init: if they moved, `focal-al project relocate {self.path} --images NEW_FOLDER`."
                )
            digest = file_sha256(file)
            if digest != entry["sha256"]:
                raise ImageChangedError(
                    f"Image '{file}' has changed since the project was initialised (SHA-256 {digest[:12]}..., "
                    f"expected {entry['sha256'][:12]}...): its annotations and patches no longer match it. "
                    f"Restore the original file or start a new project."
                )

    @property
    def pool_names(self) -> list:
        """Names of the pool images, in pool order."""
        return [e["name"] for e in self.config["images"] if e["role"] == "pool"]

    @property
    def validation_names(self) -> list:
        """Names of the held-out validation images."""
        return [e["name"] for e in self.config["images"] if e["role"] == "validation"]

    @property
    def store(self):
        """The project's :class:`focal_al.store.PatchStore` (the pool at the network's scale)."""
        if self._store is None:
            from focal_al.store import PatchStore

            self._store = PatchStore(self.path / "pool.h5")
        return self._store

    def _full_shape(self, name) -> tuple:
        """Shape of an image's label frame: the original pixels, or a slide's pyramid level."""
        entry = self._images[name]
        if entry.get("kind") == "slide":
            return tuple(entry["frame"])
        return entry["height"], entry["width"]

    def _level0(self, name) -> float:
        """Level-0 (QuPath) pixels per label-frame pixel: 1 for images, the level's downsample for slides."""
        return float(self._images[name].get("downsample", 1.0))

    def _is_slide_project(self) -> bool:
        return any(e.get("kind") == "slide" for e in self.config["images"])

    def _exported(self, region) -> "Region":
        """A region with its box in level-0 pixels, as every exported file gives it."""
        import dataclasses

        d = self._level0(region.image)
        if d == 1.0:
            return region
        return dataclasses.replace(region, box=tuple(int(round(v * d)) for v in region.box))

    def _read_full_image(self, name) -> np.ndarray:
        from focal_al.datasets import _read_image

        return _read_image(Path(self._images[name]["path"]))

    def _read_frame_image(self, name) -> np.ndarray:
        """An image in its label frame: the image itself, or a slide read at its level block by block."""
        entry = self._images[name]
        if entry.get("kind") != "slide":
            return self._read_full_image(name)
        return self._read_slide_window(name, 0, 0, *self._full_shape(name))

    def _read_slide_window(self, name, y, x, h, w) -> np.ndarray:
        """RGB uint8 of a slide's window in its label frame (level pixels), read block by block."""
        from focal_al.slides import _rgb, open_slide

        d = self._level0(name)
        out = np.zeros((h, w, 3), dtype=np.uint8)
        with open_slide(self._images[name]["path"]) as slide:
            level = int(np.argmin([abs(float(v) - d) for v in slide.level_downsamples]))
            for by in range(0, h, 2048):
                for bx in range(0, w, 2048):
                    bh, bw = min(2048, h - by), min(2048, w - bx)
                    region = slide.read_region((int(round((x + bx) * d)), int(round((y + by) * d))), level, (bw, bh),
                                               as_array=True)
                    out[by:by + bh, bx:bx + bw] = _rgb(np.asarray(region))[:bh, :bw]
        return out

    def labels(self, name) -> np.ndarray:
        """Full-resolution class labels of a pool image: 0, 1, or 255 where nothing is annotated.

        Parameters
        ----------
        name : str

        Returns
        -------
        ndarray of uint8 of shape (H, W)
        """
        file = self.state["labels"].get(name)
        shape = self._full_shape(name)
        if file is None:
            return np.full(shape, IGNORE, dtype=np.uint8)
        path = self.path / file
        try:
            labels = np.array(read_png(path))
        except (OSError, ValueError, SyntaxError) as err:
            raise ProjectError(f"Label file '{path}' of image {name!r} cannot be read as a PNG ({err}); restore it "
                               "from a backup, or re-import that image's annotations.") from err
        if labels.shape != tuple(shape) or not set(np.unique(labels).tolist()) <= {0, 1, IGNORE}:
            raise ProjectError(f"Label file '{path}' of image {name!r} holds a {labels.shape} image with values "
                               f"{np.unique(labels)[:6].tolist()}; expected {tuple(shape)} with 0, 1 and {IGNORE}. "
                               "Restore it from a backup.")
        return labels

    def labelled(self) -> np.ndarray:
        """Sorted pool rows labelled so far (initial images and answered regions)."""
        rows = list(self.state["initial"])
        for r in self.state["rounds"]:
            rows.extend(r["answered"])
        return np.unique(np.asarray(rows, dtype=np.intp))

    def regions(self, round_=None) -> list:
        """The regions asked (all rounds, or one), as :class:`focal_al.annotations.Region`.

        Parameters
        ----------
        round_ : int, optional

        Returns
        -------
        list of Region
        """
        out = []
        for r in self.state["rounds"]:
            if round_ is not None and r["round"] != round_:
                continue
            for rank, (row, score) in enumerate(zip(r["asked"], r["scores"]), start=1):
                out.append(self._region(row, r["round"], rank, score))
        return out

    def _region(self, row, round_, rank, score) -> Region:
        store = self.store
        i = int(store.image_index[row])
        name = store.image_names[i]
        y, x = (int(v) for v in store.coords[row])
        hs, ws = (int(v) for v in store.image_shapes[i])
        h, w = self._full_shape(name)
        l = store.patch_size
        # Exact integer scaling: the box holds every original pixel a patch pixel samples (_sample_rows).
        y1, x1 = min(y + l, hs), min(x + l, ws)
        box = ((x * w) // ws, (y * h) // hs, -((-x1 * w) // ws), -((-y1 * h) // hs))
        return Region(name=f"R{round_}-{rank:03d}", round=int(round_), rank=int(rank), score=float(score),
                      image=name, box=tuple(int(v) for v in box), pool_index=int(row))

    def open_regions(self) -> list:
        """Regions asked and not answered yet."""
        answered = {row for r in self.state["rounds"] for row in r["answered"]}
        return [g for g in self.regions() if g.pool_index not in answered]

    # ------------------------------------------------------------------------------- the learner

    def patch_labels(self, rows, *, labels=None) -> np.ndarray:
        """Class labels of pool rows at the network's scale (255 outside the annotated pixels).

        Parameters
        ----------
        rows : ndarray of int of shape (n,)
        labels : dict of str to ndarray, optional
            Full-resolution label maps to use instead of the committed ones, by image name.

        Returns
        -------
        ndarray of uint8 of shape (n, l, l)
        """
        from focal_al.patches import _mirror_pad, patch_grid

        store, l = self.store, self.store.patch_size
        rows = np.asarray(rows, dtype=np.intp)
        out = np.empty((len(rows), l, l), dtype=np.uint8)
        for i in np.unique(store.image_index[rows]).tolist():
            shape = tuple(int(v) for v in store.image_shapes[i])
            name = store.image_names[i]
            full = labels[name] if labels and name in labels else self.labels(name)
            small = _downsample_labels(full, shape)
            padded = _mirror_pad(small, patch_grid(shape, l, store.overlap, allow_padding=True).padded_shape)
            for k in np.flatnonzero(store.image_index[rows] == i):
                y, x = (int(v) for v in store.coords[rows[k]])
                out[k] = padded[y:y + l, x:x + l]
        return out

    def _make_net(self):
        from focal_al.estimator import SegmentationNet

        net = self.config["network"]
        return SegmentationNet(module__width=net["width"], module__depth=net["depth"], lr=net["lr"],
                               batch_size=net["batch_size"], max_epochs=1, steps_per_epoch=net["train_steps"],
                               warm_start=True, random_state=self.config["seed"])

    def _load_net(self):
        net = self._make_net()
        if self.state["weights"] is None:
            net.initialize()
        else:
            net.load_weights(self.path / self.state["weights"]["file"])
        return net

    def learner(self, net=None, *, strategy=None, strategy_params=None, round_=None, scorer=None):
        """The project's :class:`focal_al.learner.PatchActiveLearner`, rebuilt from the files.

        Every labelled pool row is taught once with its labels from the label files, recorded without
        training (``teach(..., fit=False)``): the project trains in :meth:`train` (or when ``query`` /
        ``predict`` find the weights older than the labels) through ``learner.train()``, the recipe
        ``learner.teach`` runs in code and in the bench.

        Parameters
        ----------
        net : SegmentationNet, optional
            The learner's estimator; default the project's network with its saved weights, so the
            learner can query, score and predict.
        strategy : str, optional
            Default: the project's strategy.
        strategy_params : dict, optional
            Default: the project's strategy parameters (when ``strategy`` is the project's).
        round_ : int, optional
            The round the strategy's random stream is seeded for (default: the next round).
        scorer : callable, optional
            How the round's pass over the pool is made (``PatchActiveLearner``'s ``scorer``);
            default the network's ``score_pool``.

        Returns
        -------
        PatchActiveLearner
        """
        from focal_al.learner import PatchActiveLearner
        from focal_al.registry import query_strategy

        name = strategy or self.config["strategy"]
        params = strategy_params if strategy_params is not None else (
            self.config["strategy_params"] if name == self.config["strategy"] else {})
        round_ = len(self.state["rounds"]) + 1 if round_ is None else round_
        learner = PatchActiveLearner(
            self._load_net() if net is None else net,
            query_strategy(name, random_state=_seed(self.config["seed"], 1, round_), **params),
            store=self.store, random_state=_seed(self.config["seed"], 2, round_), scorer=scorer,
        )
        labelled = self.labelled()
        if labelled.size:
            learner.teach(labelled, y=self.patch_labels(labelled), fit=False)
        return learner

    # ------------------------------------------------------------------------------- committing

    def _commit(self, state) -> None:
        state = dict(state, generation=self.state["generation"] + 1)
        write_json(self.path / "state.json", state)
        self.state = state
        self._remove_unreferenced()

    def _remove_unreferenced(self) -> None:
        """Delete files a killed command wrote but never committed, and the project's files no longer in use.

        Only names the project writes are touched (``labels/<image>.<n>.png``, ``weights/net.<n>.*``,
        ``rounds/round-NNN``, hidden ``.*.tmp`` files and folders): anything else a user keeps in the
        folder (answers, other weights, sub-folders) stays.
        """
        keep = {self.path / f for f in self.state["labels"].values()}
        if self.state["weights"] is not None:
            keep.add(self.path / self.state["weights"]["file"])
        names = set(self.pool_names)
        ours = {"labels": lambda m: m["stem"] in names and m["suffix"] == "png",
                "weights": lambda m: m["stem"] == "net" and m["suffix"] in ("pt", "safetensors")}
        for folder, is_ours in ours.items():
            for file in (self.path / folder).iterdir() if (self.path / folder).is_dir() else ():
                if file in keep or not file.is_file():
                    continue
                match = OWN_FILE.match(file.name)
                if (match and is_ours(match)) or TEMPORARY.match(file.name):
                    file.unlink()
        for file in self.path.glob(".*.tmp"):
            if file.is_file():
                file.unlink()
        rounds = {f"round-{r['round']:03d}" for r in self.state["rounds"]}
        for folder in (self.path / "rounds").iterdir() if (self.path / "rounds").is_dir() else ():
            if folder.is_dir() and folder.name not in rounds and (ROUND_FOLDER.match(folder.name) or TEMPORARY.match(folder.name)):
                shutil.rmtree(folder, ignore_errors=True)

    def _file_name(self, folder: str, stem: str, suffix: str) -> str:
        (self.path / folder).mkdir(exist_ok=True)
        return f"{folder}/{stem}.{self.state['generation'] + 1}{suffix}"

    # ------------------------------------------------------------------------------- training

    def _weights_stale(self) -> bool:
        weights = self.state["weights"]
        return weights is None or weights["labels_generation"] != self.state["labels_generation"]

    def _train(self, net, learner, steps, progress=False) -> dict:
        """Continue training ``net`` on the learner's labelled rows and write the weights (uncommitted);
        ``progress``: a bar over the steps (see :meth:`train`)."""
        from focal_al.progress import TrainingProgress, shows_progress

        total = (self.state["weights"] or {}).get("steps", 0) + steps
        net.set_params(steps_per_epoch=int(steps), random_state=_seed(self.config["seed"], 3, total))
        if shows_progress(progress):
            # skorch builds callbacks_ before it stores the new callbacks: build them again on this loaded net.
            net.set_params(callbacks=[("progress", TrainingProgress("training", enabled=True))]).initialize_callbacks()
        # The learner's recipe, as PatchActiveLearner.teach fits: its labelled rows, warm started.
        learner.train()
        import torch

        if not all(bool(torch.isfinite(t).all()) for t in net.module_.state_dict().values() if t.is_floating_point()):
            raise ProjectError(
                f"Training diverged: the network's weights are no longer finite (NaN or infinite) after {steps} "
                f"steps at learning rate {net.lr:g}; nothing was committed, the project keeps its last weights. "
                f"Lower the learning rate (project.json, network.lr; 1e-3 is the default) and train again."
            )
        file = self._file_name("weights", "net", ".safetensors")
        net.save_weights(self.path / file)
        return {"file": file, "labels_generation": self.state["labels_generation"], "steps": total}

    @committing_command
    def train(self, *, steps=None, progress=False) -> dict:
        """Train the network on every labelled pixel (continuing from the saved weights).

        Parameters
        ----------
        steps : int, optional
            Gradient steps; default the project's ``train_steps``.
        progress : bool or None, default=False
            A progress bar over the steps on stderr; None: where stderr is a terminal.

        Returns
        -------
        dict
            The weights entry of the state: ``file``, ``steps`` (total so far).
        """
        steps = self.config["network"]["train_steps"] if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"The 'steps' parameter of train must be an int >= 1. Got {steps!r} instead.")
        if not self.labelled().size:
            raise ProjectError(
                f"Project '{self.path}' has no labels to train on: give complete masks to init, or "
                f"query regions and import their annotations first."
            )
        net = self._load_net()
        weights = self._train(net, self.learner(net), steps, progress)
        self._commit(dict(self.state, weights=weights))
        return weights

    def _trained_net(self, progress=False):
        """The network, trained first if labels changed since its weights (the new weights uncommitted)."""
        net = self._load_net()
        weights = self.state["weights"]
        if self.labelled().size and self._weights_stale():
            weights = self._train(net, self.learner(net), self.config["network"]["train_steps"], progress)
        return net, weights

    # ------------------------------------------------------------------------------- querying

    def _distributed_scorer(self, net, scheduler, workers, round_):
        """A learner scorer that scores the whole store on Dask workers into a hidden scores file."""
        from focal_al.distributed import score_pool_distributed
        from focal_al.streaming import FileScores

        path = self.path / "rounds" / f".scores-{round_:03d}.h5"
        path.parent.mkdir(exist_ok=True)

        def score(learner, X_pool, rows):
            file = score_pool_distributed(net, self.store, path, client=scheduler, n_workers=workers or 2,
                                          overwrite=True)
            return FileScores(file, rows)

        return score, path

    @committing_command
    def query(self, n, *, strategy=None, strategy_params=None, crops=False, context=32, scheduler=None,
              workers=None, progress=False) -> Path:
        """Ask for ``n`` regions: train if needed, score the pool once, export round r.

        The round's folder ``rounds/round-NNN`` holds ``regions.csv`` (every region),
        ``geojson/<image>.geojson`` (a QuPath FeatureCollection of the image's regions),
        ``napari/<image>.csv`` (the regions as a napari Shapes layer), ``overview/<image>.png``
        (the image with its regions numbered by rank) and, with ``crops``, ``crops/<region>.png``.

        Parameters
        ----------
        n : int
            Regions to ask, at most the number of unlabelled pool patches.
        strategy : str, optional
            A registered patch-level strategy for this round; default the project's, or
            ``"random-patch"`` while nothing is labelled (an untrained network's uncertainty is noise).
        strategy_params : dict, optional
        crops : bool, default=False
            Also write a picture of each region with ``context`` pixels around it.
        context : int, default=32
        scheduler : str, optional
            A Dask scheduler address: score the pool on its workers and select with the streaming
            FocAnnot (``focannot-streaming``), for pools too large for one process.
        workers : int, optional
            The same on a local cluster of this many worker processes. Pools of more than
            ``LARGE_POOL`` patches take this route by themselves (2 workers).
        progress : bool or None, default=False
            Progress bars on stderr (training when the weights are older than the labels, patches
            scored in this process); None: where stderr is a terminal.

        Returns
        -------
        pathlib.Path
            The round's folder.
        """
        from focal_al.progress import scoring_with_progress, shows_progress
        from focal_al.registry import strategy_info

        still_open = self.open_regions()
        if still_open:
            raise ProjectError(
                f"Round {still_open[0].round} of '{self.path}' has {len(still_open)} unanswered region(s) "
                f"({', '.join(g.name for g in still_open[:5])}{' ...' if len(still_open) > 5 else ''}); import "
                f"their annotations (`focal-al project import`) before asking for more."
            )
        if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or context < 0:
            raise ValueError(f"The context around each crop (--context) must be an int >= 0 pixels. Got {context!r} "
                             "instead.")
        n_unlabelled = len(self.store) - int(self.labelled().size)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= n_unlabelled:
            raise ValueError(f"The number of regions to ask (--n) must be an int in [1, {n_unlabelled}] (the pool's "
                             f"unlabelled regions). Got {n!r} instead.")
        if strategy is None:
            strategy = self.config["strategy"] if self.labelled().size else "random-patch"
        if strategy_info(strategy).kind != "patch":
            raise ValueError(f"The 'strategy' parameter of query must be a patch-level strategy. Got {strategy!r}.")
        round_ = len(self.state["rounds"]) + 1
        net, weights = self._trained_net(progress)
        scorer, scores_path = None, None
        if scheduler is not None or workers is not None or len(self.store) > LARGE_POOL:
            if strategy not in ("focannot", "focannot-streaming", "random-patch"):
                raise ValueError(f"A pool scored on Dask workers (--scheduler, --workers, or over {LARGE_POOL:,} "
                                 f"patches) is queried with the streaming FocAnnot; strategy {strategy!r} needs the "
                                 "whole pool's scores in memory.")
            if strategy == "focannot":
                strategy_params = dict(strategy_params if strategy_params is not None else
                                       self.config["strategy_params"])
                other = sorted(set(strategy_params) - {"k", "lam", "candidate_ratio", "normalize"})
                if other:
                    raise ValueError(f"The streaming FocAnnot of large pools takes k, lam, candidate_ratio and "
                                     f"normalize; the project's strategy parameters also set {other}.")
                strategy = "focannot-streaming"
            if strategy != "random-patch":
                scorer, scores_path = self._distributed_scorer(net, scheduler, workers, round_)
        if strategy == "random-patch" and scorer is None:
            scorer = _no_scores  # random regions read no score: no pass of the (maybe untrained) network
        if scorer is None and shows_progress(progress):
            scorer = scoring_with_progress
        learner = self.learner(net, strategy=strategy, strategy_params=strategy_params, round_=round_, scorer=scorer)
        pool = self.store.patches
        try:
            rows, _ = learner.query(pool, n_instances=n)
            # The query's one scoring pass, over the unlabelled rows: each region's score is read from it.
            candidate_scores, candidates = learner.candidate_scores(pool)
            scores = np.asarray(candidate_scores.entropy)[np.searchsorted(candidates, rows)]
        finally:
            if scores_path is not None:  # the round's scores are recorded below; the file is scratch
                scores_path.unlink(missing_ok=True)
                scores_path.with_suffix(".safetensors").unlink(missing_ok=True)
        order = np.argsort(-scores, kind="stable")
        rows, scores = rows[order], scores[order]
        record = {"round": round_, "strategy": strategy,
                  "strategy_params": strategy_params if strategy_params is not None else (
                      self.config["strategy_params"] if strategy == self.config["strategy"] else {}),
                  "asked": rows.tolist(), "scores": [float(s) for s in scores], "answered": []}
        regions = [self._region(row, round_, rank, s) for rank, (row, s) in enumerate(zip(rows, scores), start=1)]
        folder = self._export_round(round_, regions, crops=crops, context=context)
        self._commit(dict(self.state, weights=weights, rounds=self.state["rounds"] + [record]))
        return folder

    def _export_round(self, round_, regions, *, crops, context) -> Path:
        final = self.path / "rounds" / f"round-{round_:03d}"
        final.parent.mkdir(exist_ok=True)
        tmp = readable(Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)), directory=True)
        try:
            # Every file a person opens is in level-0 pixels (a slide's full resolution, QuPath's frame).
            (tmp / "regions.csv").write_text(regions_csv([self._exported(g) for g in regions]), encoding="utf-8")
            for sub in ("geojson", "napari", "overview") + (("crops",) if crops else ()):
                (tmp / sub).mkdir()
            by_image = {}
            for g in regions:
                by_image.setdefault(g.image, []).append(g)
            for name, own in by_image.items():
                exported = [self._exported(g) for g in own]
                collection = feature_collection(region_feature(g) for g in exported)
                (tmp / "geojson" / f"{name}.geojson").write_text(json.dumps(collection, indent=1), encoding="utf-8")
                (tmp / "napari" / f"{name}.csv").write_text(napari_shapes_csv(exported), encoding="utf-8")
                image = self._read_frame_image(name)
                (tmp / "overview" / f"{name}.png").write_bytes(draw_overview(image, own))
                if crops:
                    for g in own:
                        (tmp / "crops" / f"{g.name}.png").write_bytes(draw_crop(image, g, context=context))
            fsync_tree(tmp)
            if final.exists():
                # Left by a query killed before its commit: the state never referred to it.
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    # ------------------------------------------------------------------------------- importing

    def _open_by_image(self) -> dict:
        by_image = {}
        for g in self.open_regions():
            by_image.setdefault(g.image, []).append(g)
        return by_image

    @committing_command
    def import_masks(self, folder, *, mask_suffix=None) -> ImportReport:
        """Answer the open regions of the images that have a label mask in ``folder``.

        A mask answers every open region of its image: the mask's pixels inside the regions are
        revealed (positive = gland, 0 = background); pixels outside them stay unannotated.

        Parameters
        ----------
        folder : str or path-like
            Masks named ``<image><mask_suffix>.<ext>``, at the original image size.
        mask_suffix : str, optional
            Default: the project's (given to init).

        Returns
        -------
        ImportReport
        """
        if self._is_slide_project():
            raise ProjectError("A whole-slide project imports QuPath GeoJSON (`--geojson`), in level-0 pixels: a "
                               "full-resolution mask of a slide would not fit in memory.")
        suffix = self.config["mask_suffix"] if mask_suffix is None else mask_suffix
        files, unknown = match_masks(folder, set(self._images), suffix, "masks")
        if not files:
            raise AnnotationError(f"The masks folder '{folder}' holds no mask named '<image>{suffix}.<ext>'.")
        open_by_image = self._open_by_image()
        report, answers = ImportReport(), {}
        report.not_asked += [f"'{Path(folder) / name}': no project image of that name" for name in unknown]
        for name, file in files.items():
            foreground = read_label_mask(file, self._full_shape(name))
            if name not in open_by_image:
                report.not_asked.append(f"'{file}': image {name!r} has no open region")
                continue
            answers[name] = (open_by_image[name], foreground)
        return self._apply(answers, report, [str(f) for f in files.values()])

    @committing_command
    def import_geojson(self, files, *, image=None) -> ImportReport:
        """Answer open regions from QuPath GeoJSON exports (FeatureCollection or array of Features).

        The image of a file is its stem (``train_1.geojson`` annotates ``train_1``) unless
        ``image`` is given. Rectangles of class ``"Region"`` named like an open region mark it
        answered (background where no object lies); a file without any marks answers the open
        regions of its image that its objects fall in or touch, and leaves the others open. Every
        other Polygon or MultiPolygon is foreground, rasterised inside the answered regions only.

        Parameters
        ----------
        files : sequence of str or path-like
        image : str, optional
            The image every file annotates.

        Returns
        -------
        ImportReport
        """
        from shapely.geometry import shape as to_shape
        from shapely.validation import make_valid

        files = [Path(f) for f in ([files] if isinstance(files, (str, os.PathLike)) else files)]
        if not files:
            raise ValueError("import_geojson needs at least one GeoJSON file.")
        open_by_image = self._open_by_image()
        by_name = {g.name: g for g in self.regions()}
        report, per_image = ImportReport(), {}
        for file in files:
            name = image or file.stem
            if name not in self._images:
                raise AnnotationError(
                    f"GeoJSON file '{file}' names no image of the project: {name!r} (the file stem) is not "
                    f"among {list(self._images)[:5]}{' ...' if len(self._images) > 5 else ''}; rename the "
                    f"file '<image>.geojson' or pass image=."
                )
            features = read_geojson(file)
            if not features:
                raise AnnotationError(f"GeoJSON file '{file}' holds no features: it has no labels to import.")
            h, w = self._full_shape(name)
            level0 = self._level0(name)
            marks, objects, skipped = [], [], 0
            for k, feature in enumerate(features):
                geometry = feature.get("geometry")
                if not isinstance(geometry, dict) or geometry.get("type") not in ("Polygon", "MultiPolygon"):
                    skipped += 1
                    continue
                if not _finite_coordinates(geometry.get("coordinates")):
                    raise AnnotationError(
                        f"GeoJSON file '{file}': feature {k} has a vertex that is not a finite number (NaN, "
                        "infinite or not a number); fix or delete that object and export again."
                    )
                try:
                    shp = to_shape(geometry)
                except (ValueError, TypeError, AttributeError, IndexError) as exc:
                    raise AnnotationError(
                        f"GeoJSON file '{file}': feature {k} has an invalid geometry ({exc})."
                    ) from exc
                if level0 != 1.0:  # level-0 (QuPath) pixels into the slide's label frame
                    from shapely.affinity import scale as rescale

                    shp = rescale(shp, 1.0 / level0, 1.0 / level0, origin=(0, 0))
                x0, y0, x1, y1 = shp.bounds
                tol = _FRAME_TOLERANCE
                if x0 < -tol or y0 < -tol or x1 > w + tol or y1 > h + tol:
                    raise AnnotationError(
                        f"GeoJSON file '{file}': feature {k} spans x {x0:g}..{x1:g}, y {y0:g}..{y1:g}, beyond "
                        f"image {name!r} ({w} x {h} pixels). Coordinates must be full-resolution pixels of "
                        f"this image (is it an export from another image or a rescaled frame?)."
                    )
                properties = feature.get("properties") or {}
                if not isinstance(properties, dict):
                    raise AnnotationError(f"GeoJSON file '{file}': feature {k} has 'properties' {properties!r}; "
                                          "expected an object.")
                classification = properties.get("classification") or {}
                if isinstance(classification, str):  # {"classification": "Region"}: the class's name alone
                    classification = {"name": classification}
                if not isinstance(classification, dict):
                    raise AnnotationError(f"GeoJSON file '{file}': feature {k} has 'classification' "
                                          f"{classification!r}; expected an object with a 'name' or a name.")
                if str(classification.get("name", "")).lower() == REGION_CLASS["name"].lower():
                    marks.append((k, properties.get("name"), shp))
                else:
                    objects.append(make_valid(shp))
            if skipped:
                report.not_asked.append(f"'{file}': {skipped} feature(s) that are not polygons ignored")
            answered = []
            for k, mark, shp in marks:
                region = by_name.get(mark)
                if region is None or region.image != name:
                    report.not_asked.append(f"'{file}': region {mark!r} was never asked for image {name!r}")
                    continue
                found = tuple(round(v) for v in shp.bounds)
                if max(abs(a - b) for a, b in zip(found, region.box)) > 1:
                    raise AnnotationError(
                        f"GeoJSON file '{file}': region {mark!r} has bounds {found} but was asked as "
                        f"{region.box} (x0, y0, x1, y1); the file is in another coordinate frame (exported "
                        f"from a downsampled view?). Export full-resolution pixel coordinates."
                    )
                if region not in open_by_image.get(name, []):
                    report.not_asked.append(f"'{file}': region {mark!r} was answered before; kept as it was")
                    continue
                answered.append(region)
            if not marks:
                # Objects alone answer the regions they fall in or touch; a region with no object in the
                # file is not answered "background" by default (a glands-only or cropped export would
                # silently commit every open region as background).
                still_open = list(open_by_image.get(name, []))
                answered = [r for r in still_open if any(g.intersects(_box(r.box)) for g in objects)]
                empty = [r.name for r in still_open if r not in answered]
                if empty:
                    report.not_asked.append(
                        f"'{file}': no object in open region(s) {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''} "
                        f"of image {name!r}: left open (a file without Region rectangles answers only the regions "
                        f"its objects touch; add a Region rectangle named like the region to answer it as background)")
            if not answered:
                report.not_asked.append(f"'{file}': no open region of image {name!r} in it")
                continue
            outside = [g for g in objects if not any(g.intersects(_box(r.box)) for r in answered)]
            if outside:
                report.not_asked.append(f"'{file}': {len(outside)} object(s) outside every answered region ignored")
            regions, shapes = per_image.setdefault(name, ([], []))
            for region in answered:
                if region not in regions:
                    regions.append(region)
            shapes.extend(objects)
        answers = {name: (regions, rasterise(shapes, self._full_shape(name)))
                   for name, (regions, shapes) in per_image.items()}
        return self._apply(answers, report, [str(f) for f in files])

    def _apply(self, answers, report, sources) -> ImportReport:
        """Reveal the answered regions, teach the learner their rows and commit."""
        if not answers:
            raise AnnotationError(
                f"Nothing to import from {sources[:5]}: no labels for any asked, unanswered region "
                f"({len(self.open_regions())} open). " + "; ".join(report.not_asked[:5])
            )
        new_files, new_maps, new_rows = dict(self.state["labels"]), {}, []
        for name, (regions, foreground) in answers.items():
            labels = new_maps[name] = self.labels(name)
            for r in regions:
                x0, y0, x1, y1 = r.box
                labels[y0:y1, x0:x1] = foreground[y0:y1, x0:x1]
                new_rows.append(r.pool_index)
                report.answered.append(r.name)
            new_files[name] = self._file_name("labels", name, ".png")
            atomic_write_bytes(self.path / new_files[name], png_bytes(labels))
        rows = np.asarray(sorted(new_rows), dtype=np.intp)
        # The teach step of the active-learning loop: the learner as it stood is taught the answered
        # rows (it refuses rows already labelled or repeated) before the state records them.
        learner = self.learner(self._make_net())
        learner.teach(rows, y=self.patch_labels(rows, labels=new_maps), fit=False)
        answered = set(rows.tolist())
        rounds = [dict(r, answered=sorted(set(r["answered"]) | (answered & set(r["asked"]))))
                  for r in self.state["rounds"]]
        self._commit(dict(self.state, labels=new_files, rounds=rounds,
                          labels_generation=self.state["labels_generation"] + 1))
        report.missing = [g.name for g in self.open_regions()]
        return report

    @committing_command
    def reopen(self, names) -> list:
        """Re-open answered regions (a wrong answer): they are asked again in their round.

        Their pixels become unannotated (255) again, except where another answered region or an
        initial image also covers them; the network's weights become older than the labels. Each
        re-opening is recorded in the round's ``reopened`` list. Answer them again with ``import``.

        Parameters
        ----------
        names : sequence of str
            Region names, e.g. ``["R1-002"]``.

        Returns
        -------
        list of str
            The regions re-opened.
        """
        names = [names] if isinstance(names, str) else list(names)
        if not names:
            raise ValueError("reopen needs at least one region name, e.g. R1-002.")
        by_name = {g.name: g for g in self.regions()}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ProjectError(f"Project '{self.path}' asked no region named {', '.join(map(repr, unknown))}; its "
                               f"regions are {', '.join(list(by_name)[:8])}{' ...' if len(by_name) > 8 else ''}.")
        answered = {row for r in self.state["rounds"] for row in r["answered"]}
        unanswered = [n for n in names if by_name[n].pool_index not in answered]
        if unanswered:
            raise ProjectError(f"Region(s) {', '.join(unanswered)} of '{self.path}' are not answered; there is "
                               "nothing to re-open.")
        targets = [by_name[n] for n in dict.fromkeys(names)]
        rows = {g.pool_index for g in targets}
        others = [g for g in self.regions() if g.pool_index in answered and g.pool_index not in rows]
        initial_images = {self.store.image_names[i] for i in np.unique(self.store.image_index[self.state["initial"]])} \
            if self.state["initial"] else set()
        new_files = dict(self.state["labels"])
        for name in sorted({g.image for g in targets}):
            if name in initial_images:
                raise ProjectError(f"Image {name!r} of '{self.path}' was labelled whole at init; its regions cannot be "
                                   "re-opened one by one.")
            labels = self.labels(name)
            cleared = np.zeros(labels.shape, dtype=bool)
            for g in targets:
                if g.image == name:
                    x0, y0, x1, y1 = g.box
                    cleared[y0:y1, x0:x1] = True
            for g in others:
                if g.image == name:
                    x0, y0, x1, y1 = g.box
                    cleared[y0:y1, x0:x1] = False
            labels[cleared] = IGNORE
            new_files[name] = self._file_name("labels", name, ".png")
            atomic_write_bytes(self.path / new_files[name], png_bytes(labels))
        generation = self.state["labels_generation"] + 1
        rounds = [dict(r, answered=[row for row in r["answered"] if row not in rows],
                       reopened=r.get("reopened", []) + [{"row": g.pool_index, "region": g.name,
                                                          "labels_generation": generation}
                                                         for g in targets if g.round == r["round"]])
                  for r in self.state["rounds"]]
        self._commit(dict(self.state, labels=new_files, rounds=rounds, labels_generation=generation))
        return [g.name for g in targets]

    # ------------------------------------------------------------------------------- reporting

    @reading_command
    def status(self) -> dict:
        """Where the project stands: rounds, regions, annotation cost, Dice on validation images.

        Returns
        -------
        dict
            ``rounds`` (round, strategy, asked, answered, missing), ``regions_asked``,
            ``regions_answered``, ``labelled_patches``, ``revealed_pixels`` / ``total_pixels`` /
            ``cost`` (original pixels of the pool images), ``foreground_pixels``,
            ``regions_with_foreground`` (answered regions holding some gland),
            ``network_cost`` (the learner's ``cost_`` at the network's scale), ``trained_steps``,
            ``weights_current`` (trained since the last import), ``validation_dice`` (mean over
            validation images, None without validation images or weights) and ``validation``.
        """
        revealed = foreground = total = with_foreground = 0
        answered = {row for r in self.state["rounds"] for row in r["answered"]}
        regions = [g for g in self.regions() if g.pool_index in answered]
        for name in self.pool_names:
            labels = self.labels(name)
            revealed += int((labels != IGNORE).sum())
            foreground += int((labels == 1).sum())
            total += labels.size
            with_foreground += sum(bool((labels[g.box[1]:g.box[3], g.box[0]:g.box[2]] == 1).any())
                                   for g in regions if g.image == name)
        rounds = [{"round": r["round"], "strategy": r["strategy"], "asked": len(r["asked"]),
                   "answered": len(r["answered"]), "missing": len(r["asked"]) - len(r["answered"])}
                  for r in self.state["rounds"]]
        validation = {}
        if self.validation_names and self.state["weights"] is not None:
            from focal_al.metrics import dice

            net = self._load_net()
            for name in self.validation_names:
                prediction = self._predict_foreground(net, name)
                validation[name] = dice(prediction, read_png(self.path / "validation" / f"{name}.png"))
        return {
            "rounds": rounds,
            "regions_asked": sum(r["asked"] for r in rounds),
            "regions_answered": sum(r["answered"] for r in rounds),
            "labelled_patches": int(self.labelled().size),
            "pool_patches": len(self.store),
            "revealed_pixels": revealed,
            "total_pixels": total,
            "cost": revealed / total,
            "foreground_pixels": foreground,
            "regions_with_foreground": with_foreground,
            "network_cost": float(self.learner(self._make_net()).cost_),
            "trained_steps": (self.state["weights"] or {}).get("steps", 0),
            "weights_current": not self._weights_stale(),
            "validation_dice": float(np.mean(list(validation.values()))) if validation else None,
            "validation": validation,
        }

    def _predict_slide_foreground(self, net, name, *, tile: int = 1024, halo: int = 64, bar=None) -> np.ndarray:
        """A slide's predicted foreground in its label frame, tile by tile (overlapping by ``halo``);
        ``bar``, a progress bar, advances by one per tile."""
        h, w = self._full_shape(name)
        foreground = np.zeros((h, w), dtype=bool)
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                y0, x0 = max(0, y - halo), max(0, x - halo)
                y1, x1 = min(h, y + tile + halo), min(w, x + tile + halo)
                window = self._read_slide_window(name, y0, x0, y1 - y0, x1 - x0)
                proba = net.predict_images([window])[0][1]
                core = proba[y - y0:min(h, y + tile) - y0, x - x0:min(w, x + tile) - x0]
                foreground[y:y + core.shape[0], x:x + core.shape[1]] = core > 0.5
                if bar is not None:
                    bar.update()
        return foreground

    def _predict_foreground(self, net, name) -> np.ndarray:
        from PIL import Image

        image = self._read_full_image(name)
        small = _resize_image(image, _scaled_shape(image.shape[:2], self.config["scale"]))
        proba = net.predict_images([small])[0][1]
        if proba.shape != image.shape[:2]:
            proba = np.asarray(Image.fromarray(proba.astype(np.float32), mode="F").resize(
                (image.shape[1], image.shape[0]), Image.Resampling.BILINEAR))
        return proba > 0.5

    @committing_command
    def predict(self, out, *, progress=False) -> list:
        """Segment every image: an instance mask and a GeoJSON of the predicted objects per image.

        Trains first if labels changed since the weights (and commits the new weights).

        Parameters
        ----------
        out : str or path-like
            Output folder (created): ``<name>_mask.png`` (uint16 instance ids, 0 = background,
            original size) and ``<name>.geojson`` (FeatureCollection of class ``"Gland"`` polygons).
        progress : bool or None, default=False
            Progress bars on stderr (training if needed, then images, or the tiles of slides); None:
            where stderr is a terminal.

        Returns
        -------
        list of pathlib.Path
            The files written.
        """
        from focal_al.metrics import label_components
        from focal_al.progress import progress_bar

        if self.state["weights"] is None and not self.labelled().size:
            raise ProjectError(f"Project '{self.path}' has no trained network and no labels; nothing to predict with.")
        net, weights = self._trained_net(progress)
        if weights != self.state["weights"]:
            self._commit(dict(self.state, weights=weights))
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        if self._is_slide_project():
            tile = 1024
            tiles = sum(-(-h // tile) * -(-w // tile) for h, w in map(self._full_shape, self.pool_names))
            with progress_bar(tiles, desc="predicting", unit="tile", enabled=progress) as bar:
                for name in self.pool_names:
                    foreground = self._predict_slide_foreground(net, name, tile=tile, bar=bar)
                    features = mask_to_features(label_components(foreground).astype(np.uint16),
                                                classification=OBJECT_CLASS, properties={"image": name})
                    features = _scaled_features(features, self._level0(name))
                    geojson_file = out / f"{name}.geojson"
                    atomic_write_bytes(geojson_file, json.dumps(feature_collection(features), indent=1).encode("utf-8"))
                    written.append(geojson_file)
            return written
        names = self.pool_names + self.validation_names
        with progress_bar(len(names), desc="predicting", unit="image", enabled=progress) as bar:
            for name in names:
                instances = label_components(self._predict_foreground(net, name)).astype(np.uint16)
                mask_file, geojson_file = out / f"{name}_mask.png", out / f"{name}.geojson"
                atomic_write_bytes(mask_file, png_bytes(instances))
                features = mask_to_features(instances, classification=OBJECT_CLASS, properties={"image": name})
                atomic_write_bytes(geojson_file, json.dumps(feature_collection(features), indent=1).encode("utf-8"))
                written += [mask_file, geojson_file]
                bar.update()
        return written


def _no_scores(learner, X_pool, rows):
    """Pool scores of zeros, for strategies that read none (random regions): no network pass."""
    from focal_al.scores import PoolScores

    zeros = np.zeros(len(rows), dtype=np.float32)
    return PoolScores(entropy=zeros, margin=zeros, least_confidence=zeros,
                      descriptors=np.zeros((len(rows), 1), dtype=np.float32))


def _scaled_features(features, factor: float) -> list:
    """GeoJSON features with every coordinate multiplied by ``factor`` (label frame to level 0)."""
    if factor == 1.0:
        return features
    from shapely.affinity import scale
    from shapely.geometry import mapping, shape

    return [dict(f, geometry=mapping(scale(shape(f["geometry"]), factor, factor, origin=(0, 0)))) for f in features]


def _finite_coordinates(coordinates, depth: int = 0) -> bool:
    """Whether a GeoJSON coordinates array (at most 4 levels: MultiPolygon) holds finite numbers only."""
    if isinstance(coordinates, (int, float)) and not isinstance(coordinates, bool):
        return bool(np.isfinite(coordinates))
    if not isinstance(coordinates, list) or depth > 4:
        return False
    return all(_finite_coordinates(c, depth + 1) for c in coordinates)


def _box(box):
    from shapely.geometry import box as make_box

    return make_box(*box)


