"""Annotation files exchanged with people and their tools: QuPath GeoJSON, label masks, region lists.

Everything here works in the original image's pixels (QuPath's level 0): origin at the top-left
corner of the top-left pixel, x to the right, y down; pixel ``(row, col)`` covers
``[col, col + 1) x [row, row + 1)`` and belongs to a polygon when its centre
``(col + 0.5, row + 0.5)`` lies inside. Polygons are rasterised with :func:`skimage.draw.polygon`
(holes subtracted) and traced back with :func:`skimage.measure.find_contours` and shapely.

A *region* is one queried patch, as a rectangle ``(x0, y0, x1, y1)`` (x1, y1 exclusive) in those
pixels. In GeoJSON a region is a closed rectangular Polygon of class ``"Region"`` whose ``name``
(``"R<round>-<rank>"``) identifies it; every other Polygon or MultiPolygon is foreground (a gland).
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "AnnotationError",
    "Region",
    "REGION_CLASS",
    "OBJECT_CLASS",
    "region_feature",
    "feature_collection",
    "read_geojson",
    "rasterise",
    "mask_to_features",
    "read_label_mask",
    "regions_csv",
    "napari_shapes_csv",
    "draw_overview",
    "draw_crop",
]

REGION_CLASS = {"name": "Region", "color": [255, 200, 0]}
"""QuPath classification of the rectangles to annotate."""

OBJECT_CLASS = {"name": "Gland", "color": [0, 170, 0]}
"""QuPath classification of foreground objects written by focal-al (predictions)."""


class AnnotationError(ValueError):
    """An annotation file that cannot be used as it is; the message names the file and the fix."""


@dataclass(frozen=True)
class Region:
    """One region to annotate: a queried patch, in the original image's pixels.

    Attributes
    ----------
    name : str
        ``"R<round>-<rank>"``, e.g. ``"R2-007"``; the key of the region in every file.
    round : int
    rank : int
        1 = asked first within the round.
    score : float
        The query score the rank follows (mean pixel entropy of the patch, IU).
    image : str
        Name of the image.
    box : tuple of (int, int, int, int)
        ``(x0, y0, x1, y1)``, x1 and y1 exclusive, clipped to the image.
    pool_index : int
        Row of the patch in the project's patch pool.
    """

    name: str
    round: int
    rank: int
    score: float
    image: str
    box: tuple
    pool_index: int

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]


def region_feature(region: Region) -> dict:
    """The QuPath GeoJSON Feature of a region: a closed rectangle of class ``"Region"``.

    Parameters
    ----------
    region : Region

    Returns
    -------
    dict
        ``{"type": "Feature", "geometry": Polygon, "properties": {...}}`` with ``objectType``,
        ``name``, ``classification``, ``round``, ``rank``, ``score`` and ``image``.
    """
    x0, y0, x1, y1 = (int(v) for v in region.box)
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "objectType": "annotation",
            "name": region.name,
            "classification": dict(REGION_CLASS),
            "isLocked": True,
            "round": int(region.round),
            "rank": int(region.rank),
            "score": float(region.score),
            "image": region.image,
        },
    }


def feature_collection(features) -> dict:
    """Wrap features in a GeoJSON FeatureCollection (what QuPath's *Import objects* reads)."""
    return {"type": "FeatureCollection", "features": list(features)}


def read_geojson(path) -> list:
    """Read the Features of a GeoJSON file: a FeatureCollection or a bare JSON array of Features.

    QuPath writes a bare array by default and a FeatureCollection when asked; both are accepted.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    list of dict
        The Features, as parsed.

    Raises
    ------
    AnnotationError
        If the file is not JSON, is neither form, or holds an element that is not a Feature.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"GeoJSON file '{path}' is not valid JSON ({exc}).") from exc
    except RecursionError:
        raise AnnotationError(f"GeoJSON file '{path}' nests its arrays too deeply to be an annotation export.") from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list):
            raise AnnotationError(
                f"GeoJSON file '{path}' is a FeatureCollection without a 'features' list."
            )
    elif isinstance(data, list):
        features = data
    else:
        found = data.get("type", "an object without 'type'") if isinstance(data, dict) else type(data).__name__
        raise AnnotationError(
            f"GeoJSON file '{path}' holds {found!s}; expected a FeatureCollection or a JSON array "
            f"of Features (QuPath's default export)."
        )
    bad = [i for i, f in enumerate(features) if not (isinstance(f, dict) and f.get("type") == "Feature")]
    if bad:
        raise AnnotationError(
            f"GeoJSON file '{path}' has {len(bad)} element(s) that are not Features (first at index "
            f"{bad[0]}); expected a FeatureCollection or a JSON array of Features."
        )
    return features


def rasterise(geometries, shape) -> np.ndarray:
    """Pixels whose centres lie inside any of the polygons.

    Parameters
    ----------
    geometries : iterable of shapely Polygon or MultiPolygon
        In pixel coordinates (x right, y down, origin at the image's top-left corner).
    shape : tuple of (int, int)
        ``(H, W)`` of the output.

    Returns
    -------
    ndarray of bool of shape (H, W)
    """
    from skimage.draw import polygon as fill

    out = np.zeros(shape, dtype=bool)
    for geometry in geometries:
        for part in _polygons(geometry):
            own = np.zeros(shape, dtype=bool)
            # skimage puts pixel centres at integer coordinates; GeoJSON puts them at +0.5.
            x, y = np.asarray(part.exterior.coords).T
            own[fill(y - 0.5, x - 0.5, shape)] = True
            for hole in part.interiors:
                x, y = np.asarray(hole.coords).T
                own[fill(y - 0.5, x - 0.5, shape)] = False
            out |= own
    return out


def _polygons(geometry):
    """The non-empty Polygons of a geometry, however nested (``make_valid`` may return collections)."""
    from shapely.geometry import Polygon

    if isinstance(geometry, Polygon):
        if not geometry.is_empty:
            yield geometry
    else:
        for part in getattr(geometry, "geoms", ()):
            yield from _polygons(part)


def _instance_geometry(binary: np.ndarray):
    from functools import reduce

    from shapely.geometry import Polygon
    from shapely.validation import make_valid
    from skimage.measure import find_contours

    # Zero padding closes the contours of objects that touch the border.
    contours = find_contours(np.pad(binary, 1).astype(np.float32), 0.5)
    rings = [Polygon(np.column_stack([c[:, 1] - 0.5, c[:, 0] - 0.5])) for c in contours if len(c) >= 4]
    rings = [make_valid(r) for r in rings if r.area > 0]
    if not rings:
        return None
    # Outer and hole contours alternate in nesting: the even-odd rule is a symmetric difference.
    return reduce(lambda a, b: a.symmetric_difference(b), rings)


def mask_to_features(instances, *, classification=None, properties=None) -> list:
    """GeoJSON Features tracing the objects of an instance (or binary) mask.

    Parameters
    ----------
    instances : ndarray of int of shape (H, W)
        0 = background, each positive value one object.
    classification : dict, optional
        QuPath classification ``{"name", "color"}``; default :data:`OBJECT_CLASS`.
    properties : dict, optional
        Further properties copied into every Feature.

    Returns
    -------
    list of dict
        One Feature per object (Polygon, or MultiPolygon when the object has several parts),
        ``objectType: "annotation"``, in pixel coordinates where a pixel's centre is at +0.5.
    """
    from shapely.geometry import MultiPolygon, mapping
    from shapely.geometry.polygon import orient

    instances = np.asarray(instances)
    classification = dict(OBJECT_CLASS if classification is None else classification)
    features = []
    for value in np.unique(instances[instances > 0]).tolist():
        geometry = _instance_geometry(instances == value)
        # GeoJSON wants exteriors counter-clockwise (RFC 7946); a collection keeps its polygons only.
        parts = [] if geometry is None else [orient(p) for p in _polygons(geometry)]
        if not parts:
            continue
        geometry = parts[0] if len(parts) == 1 else MultiPolygon(parts)
        features.append({
            "type": "Feature",
            "geometry": mapping(geometry),
            "properties": {"objectType": "annotation", "classification": classification,
                           "object": int(value), **(properties or {})},
        })
    return features


def read_label_mask(path, shape) -> np.ndarray:
    """Read a label mask (instance ids or 0/1/255 classes) at the original image size.

    Parameters
    ----------
    path : str or path-like
        PNG, BMP or TIFF, single channel, integer: 0 = background, any positive value foreground.
    shape : tuple of (int, int)
        ``(H, W)`` of the image it annotates.

    Returns
    -------
    ndarray of bool of shape (H, W)
        The foreground.

    Raises
    ------
    AnnotationError
        For several channels, a non-integer dtype, values outside [0, 65535] or another size.
    """
    from focal_al.datasets import read_label_image

    path = Path(path)
    try:
        array = read_label_image(path, error=AnnotationError)
    except AnnotationError:
        raise
    except (OSError, ValueError) as exc:
        raise AnnotationError(f"Mask file '{path}' cannot be read as an image ({exc}).") from exc
    if array.shape != tuple(shape):
        raise AnnotationError(
            f"Mask file '{path}' is {array.shape[1]} x {array.shape[0]} pixels (W x H) but its image "
            f"is {shape[1]} x {shape[0]}; masks must be at the original image size (not the "
            f"network's scale or a downsampled view)."
        )
    return array > 0


def regions_csv(regions) -> str:
    """One CSV table of regions: round, rank, name, image, x, y, width, height, score, pool_index."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["round", "rank", "name", "image", "x", "y", "width", "height", "score", "pool_index"])
    for r in regions:
        writer.writerow([r.round, r.rank, r.name, r.image, r.box[0], r.box[1], r.width, r.height,
                         f"{r.score:.6g}", r.pool_index])
    return buffer.getvalue()


def napari_shapes_csv(regions) -> str:
    """The regions as a napari Shapes layer CSV (``napari image.png regions.csv`` opens both).

    napari puts pixel centres at integer coordinates (axis-0 = row, axis-1 = column), so a region
    ``(x0, y0, x1, y1)`` is the rectangle from ``(y0 - 0.5, x0 - 0.5)`` to ``(y1 - 0.5, x1 - 0.5)``.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "shape-type", "vertex-index", "axis-0", "axis-1"])
    for index, r in enumerate(regions):
        x0, y0, x1, y1 = (v - 0.5 for v in r.box)
        for vertex, (row, col) in enumerate(((y0, x0), (y0, x1), (y1, x1), (y1, x0))):
            writer.writerow([index, "rectangle", vertex, row, col])
    return buffer.getvalue()


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=max(8, size))


def draw_overview(image, regions, *, max_side: int = 1200) -> bytes:
    """PNG of an image with its regions outlined and labelled with their names, as QuPath shows them.

    ``R1-002`` is round 1, rank 2 (1 = most uncertain).

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8
    regions : sequence of Region
        The regions of this image.
    max_side : int, default=1200
        The picture is shrunk so that its longer side is at most this.

    Returns
    -------
    bytes
        PNG file content.
    """
    from PIL import Image, ImageDraw

    picture = Image.fromarray(np.asarray(image)).convert("RGB")
    factor = min(1.0, max_side / max(picture.size))
    if factor < 1.0:
        picture = picture.resize((max(1, round(picture.width * factor)), max(1, round(picture.height * factor))),
                                 Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(picture)
    line = max(2, round(min(picture.size) / 200))
    font = _font(round(min(picture.size) / 25))
    colour = tuple(REGION_CLASS["color"])
    regions = list(regions)
    boxes = [tuple(v * factor for v in r.box) for r in regions]
    for x0, y0, x1, y1 in boxes:
        # A black edge on both sides of the yellow keeps the outline visible on white lumen too.
        draw.rectangle([x0 - 1, y0 - 1, x1, y1], outline=(0, 0, 0), width=line + 2)
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=line)
    # Labels after every outline, so that no outline of an overlapping region crosses a name.
    for r, (x0, y0, _, _) in zip(regions, boxes):
        left, top, right, bottom = draw.textbbox((0, 0), r.name, font=font)
        width, height = right - left + 2 * line, bottom - top + 2 * line
        # Inside the picture, even for a region at its right or bottom edge.
        x0 = max(0, min(x0, picture.width - 1 - width))
        y0 = max(0, min(y0, picture.height - 1 - height))
        draw.rectangle([x0, y0, x0 + width, y0 + height], fill=colour, outline=(0, 0, 0), width=1)
        draw.text((x0 + line - left, y0 + line - top), r.name, fill=(0, 0, 0), font=font)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def draw_crop(image, region: Region, *, context: int = 32) -> bytes:
    """PNG of one region with ``context`` pixels around it, the region outlined.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8
    region : Region
    context : int, default=32
        Pixels of surrounding tissue on each side (clipped to the image).

    Returns
    -------
    bytes
        PNG file content.
    """
    from PIL import Image, ImageDraw

    h, w = image.shape[:2]
    x0, y0, x1, y1 = region.box
    cx0, cy0, cx1, cy1 = max(0, x0 - context), max(0, y0 - context), min(w, x1 + context), min(h, y1 + context)
    picture = Image.fromarray(np.ascontiguousarray(image[cy0:cy1, cx0:cx1])).convert("RGB")
    ImageDraw.Draw(picture).rectangle([x0 - cx0, y0 - cy0, x1 - cx0 - 1, y1 - cy0 - 1],
                                      outline=tuple(REGION_CLASS["color"]), width=2)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()
