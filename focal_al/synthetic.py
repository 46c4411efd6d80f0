"""Synthetic H&E-like gland images: the embedded default dataset of focal-al.

Each image is drawn independently from ``numpy.random.default_rng([seed, i])``, so image ``i`` is
the same whatever ``n_images`` is. The scene:

- stroma: an eosin-pink, fibrous background with scattered dark stromal nuclei and pale gaps
  (gaps look like gland lumens, so colour alone does not separate the classes);
- glands: many touching ellipses with irregular borders, a purple epithelial rim dotted with
  nuclei and a pale lumen of varying size;
- rare objects (in every "malignant" image and a few benign ones, about 15 % of the foreground
  of the default dataset): large, blobby, pale sheets of vacuolated cells with no purple rim and
  no lumen. Their colour is close to the stroma's, so a network that has seen glands only calls
  them background; their bubbly texture tells them apart once it has seen some. These are the
  regions an active learner should find;
- a per-image stain (Beer-Lambert mix of jittered haematoxylin and eosin colours), a per-image
  rim strength (faded haematoxylin) and sensor noise.

Images are rendered in Beer-Lambert optical density space: ``rgb = 255 * exp(-(H h + E e))``.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import measure

__all__ = ["make_synthetic_image"]

# Ruifrok & Johnston optical-density vectors of haematoxylin and eosin.
_H_VECTOR = np.array([0.65, 0.70, 0.29])
_E_VECTOR = np.array([0.07, 0.99, 0.11])


def _noise(rng, shape, sigma):
    """Smooth Gaussian noise with unit standard deviation (about ``sigma`` pixels correlation)."""
    # Large blurs are drawn on a coarse grid and interpolated up: the result is as smooth and
    # costs a fraction of a full-resolution Gaussian filter.
    factor = max(1, int(sigma // 2))
    coarse = (-(-shape[0] // factor) + 1, -(-shape[1] // factor) + 1)
    field = ndimage.gaussian_filter(rng.standard_normal(coarse), sigma / factor, mode="wrap")
    if factor > 1:
        field = ndimage.zoom(field, factor, order=1, grid_mode=False)
    field = field[: shape[0], : shape[1]]
    return field / (field.std() + 1e-12)


def _stain_vector(rng, base, jitter):
    vector = np.clip(base + rng.normal(0.0, jitter, 3), 0.02, None)
    return vector / np.linalg.norm(vector)


def _place_objects(rng, shape, n_objects, radius_range):
    """Dart-throw ellipse centres that may touch (slight overlap) but not swallow each other."""
    height, width = shape
    n_tries = n_objects * 12
    radii = rng.uniform(*radius_range, n_tries)
    margin = 0.3 * radii[:, None]
    centres = rng.uniform(-margin, np.array([height, width]) + margin)
    accepted = []
    for k in range(n_tries):
        if len(accepted) == n_objects:
            break
        gaps = np.hypot(*(centres[accepted] - centres[k]).T) - 0.75 * (radii[accepted] + radii[k])
        if not accepted or gaps.min() > 0:
            accepted.append(k)
    return list(centres[accepted]), list(radii[accepted])


def _rasterise(shape, objects, border_noise):
    """Assign each pixel to the object whose normalised elliptic distance is smallest and < 1.

    Returns the instance map (0 = background, k + 1 = object k) and the distance map (how deep
    inside its object a pixel lies: 0 at the centre, 1 at the border).
    """
    height, width = shape
    ids = np.zeros(shape, dtype=np.int32)
    depth = np.full(shape, np.inf)
    for k, (cy, cx, a, b, angle, wobble) in enumerate(objects):
        r = int(np.ceil(max(a, b) * (1 + wobble) + 2))
        y0, y1 = max(int(cy) - r, 0), min(int(cy) + r + 1, height)
        x0, x1 = max(int(cx) - r, 0), min(int(cx) + r + 1, width)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = np.arange(y0, y1)[:, None] - cy
        dx = np.arange(x0, x1)[None, :] - cx
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        d = np.sqrt((u / a) ** 2 + (v / b) ** 2) * (1 + wobble * border_noise[y0:y1, x0:x1])
        window = depth[y0:y1, x0:x1]
        inside = (d < 1.0) & (d < window)
        window[inside] = d[inside]
        ids[y0:y1, x0:x1][inside] = k + 1
    return ids, depth


def _bubbles(rng, shape, density, radius):
    """A field in [0, 1]: 1 inside small round vacuoles scattered at ``density`` per pixel."""
    seeds = (rng.random(shape) < density).astype(float)
    return np.clip(ndimage.gaussian_filter(seeds, radius) * (2 * np.pi * radius**2) * 1.6, 0.0, 1.0)


def make_synthetic_image(rng, size, *, malignant, with_kinds=False):
    """Draw one synthetic image.

    Parameters
    ----------
    rng : numpy.random.Generator
    size : tuple of (int, int)
        ``(H, W)``.
    malignant : bool
        Malignant images hold the rare objects (benign ones seldom do) and more deformed glands.
    with_kinds : bool, default=False
        Also return the kind of every pixel.

    Returns
    -------
    image : ndarray of shape (H, W, 3), dtype uint8
    mask : ndarray of shape (H, W), dtype int32
        Instance ids ``1..K`` (consecutive), 0 = background.
    kinds : ndarray of shape (H, W), dtype uint8
        Only with ``with_kinds``: 0 background, 1 gland, 2 rare object.
    """
    height, width = size
    shape = (height, width)
    scale = np.sqrt(height * width / (192 * 256))
    # Smooth enough that a deformed border stays one connected object.
    border_noise = _noise(rng, shape, 5.0)

    # Glands: dense, touching, similar-looking.
    # Objects keep their size in pixels; a larger image shows more of them.
    n_glands = max(2, int(round(rng.integers(20, 30) * scale**2)))
    centres, radii = _place_objects(rng, shape, n_glands, (10, 21))
    glands = []
    for (cy, cx), radius in zip(centres, radii):
        aspect = rng.uniform(0.55, 1.0)
        wobble = rng.uniform(0.12, 0.22) if malignant else rng.uniform(0.04, 0.12)
        glands.append((cy, cx, radius, radius * aspect, rng.uniform(0, np.pi), wobble))

    # Rare objects: large, blobby, pale sheets of vacuolated cells (no purple rim, no lumen), in a
    # minority of the images. Their colour is close to the stroma's and far from the glands', so a
    # network that has seen glands only calls them background; their bubbly texture gives them away
    # once it has seen a few.
    n_rare = int(rng.integers(1, 3)) if malignant else int(rng.random() < 0.08)
    rare = []
    for _ in range(n_rare):
        length = rng.uniform(28, 48)
        rare.append(
            (
                rng.uniform(0.15, 0.85) * height,
                rng.uniform(0.15, 0.85) * width,
                length,
                length * rng.uniform(0.5, 0.85),
                rng.uniform(0, np.pi),
                rng.uniform(0.15, 0.3),
            )
        )
    # Rare objects are drawn last and win ties, so they cut into the glands they overlap.
    ids, depth = _rasterise(shape, glands + rare, border_noise)
    is_rare = ids > len(glands)
    is_gland = (ids > 0) & ~is_rare

    # Concentrations of haematoxylin (H, purple) and eosin (E, pink) per pixel.
    streak = (1.0, 5.0) if rng.random() < 0.5 else (5.0, 1.0)
    fibres = ndimage.gaussian_filter(rng.standard_normal(shape), streak)
    fibres /= fibres.std() + 1e-12
    gaps = _noise(rng, shape, 6.0) > 1.6
    conc_e = 0.45 + 0.12 * fibres + 0.08 * _noise(rng, shape, 8.0)
    conc_h = 0.10 + 0.03 * _noise(rng, shape, 2.0)
    conc_e[gaps] *= 0.25
    conc_h[gaps] *= 0.3

    # Rim strength varies per image (a faded haematoxylin), so a few images do not teach them all.
    rim_h = rng.uniform(0.3, 0.6)
    lumen_ratio = rng.uniform(0.3, 0.75, len(glands) + 1)[np.minimum(ids, len(glands))]
    rim = is_gland & (depth >= lumen_ratio)
    lumen = is_gland & ~rim
    conc_h[rim] = rim_h + 0.1 * border_noise[rim]
    conc_e[rim] = 0.35
    conc_h[lumen] = 0.04
    conc_e[lumen] = 0.10 + 0.05 * fibres[lumen]
    vacuoles = _bubbles(rng, shape, 0.02, 1.2)
    grain = ndimage.gaussian_filter(rng.standard_normal(shape), 0.7)
    conc_h[is_rare] = (0.16 + 0.05 * grain[is_rare]) * (1 - 0.8 * vacuoles[is_rare])
    conc_e[is_rare] = (0.42 + 0.06 * grain[is_rare]) * (1 - 0.75 * vacuoles[is_rare])

    # Nuclei: dense along the gland rims, sparse in the stroma and the rare sheets (a confounder
    # for "dark = gland").
    p_nucleus = np.where(rim, 0.03, np.where(ids == 0, 0.0025, np.where(is_rare, 0.002, 0.0)))
    nuclei = ndimage.gaussian_filter((rng.random(shape) < p_nucleus).astype(float), 1.3)
    conc_h += 9.0 * nuclei

    stain_h = _stain_vector(rng, _H_VECTOR, 0.08) * rng.uniform(0.7, 1.35)
    stain_e = _stain_vector(rng, _E_VECTOR, 0.08) * rng.uniform(0.65, 1.35)
    density = np.clip(conc_h, 0, None)[..., None] * stain_h + np.clip(conc_e, 0, None)[..., None] * stain_e
    rgb = 255.0 * np.exp(-density) + rng.normal(0.0, rng.uniform(4.0, 10.0), shape + (3,))
    image = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)

    # One connected piece per id (a rare object can cut a gland in two), consecutive ids, and no
    # slivers hidden by other objects or cut by the border.
    pieces = measure.label(ids, background=0, connectivity=1)
    labels, counts = np.unique(pieces, return_counts=True)
    keep = labels[(labels > 0) & (counts >= 20)]
    lookup = np.zeros(pieces.max() + 1, dtype=np.int32)
    lookup[keep] = np.arange(1, len(keep) + 1, dtype=np.int32)
    mask = lookup[pieces]
    if not with_kinds:
        return image, mask
    kinds = np.where(mask == 0, 0, np.where(is_rare, 2, 1)).astype(np.uint8)
    return image, mask, kinds
