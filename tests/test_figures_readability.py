"""Figures that read at a glance: Fig. 6 on H&E stain, and project overviews labelled by region name."""
import io

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image, ImageDraw

from focal_al.annotations import REGION_CLASS, Region, draw_overview
from focal_al.bench import figures

#: Stain colours the overlay must stay away from: H&E purple, dark haematoxylin, eosin pink.
STAINS = np.array([(0.55, 0.3, 0.6), (0.3, 0.15, 0.45), (0.9, 0.5, 0.75)])
PURPLE = (np.array(STAINS[0]) * 255).astype(np.uint8)


def stain_distance(colors) -> np.ndarray:
    """Distance in RGB ([0, 1]) from each colour to the nearest stain colour."""
    colors = np.asarray(colors, dtype=float)[..., :3].reshape(-1, 1, 3)
    return np.linalg.norm(colors - STAINS[None], axis=2).min(axis=1)


def luminance(rgb) -> float:
    return float(np.dot(np.asarray(rgb[:3], dtype=float) / 255, (0.299, 0.587, 0.114)))


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib figures that draw_queries saves, kept for inspection."""
    saved = []
    save = figures._save

    def keep(fig, path):
        saved.append(fig)
        return save(fig, path)

    monkeypatch.setattr(figures, "_save", keep)
    return saved


def colorbar(fig):
    axes = [a for ax in fig.axes for a in (ax, *ax.child_axes)]
    bars = [a._colorbar for a in axes if getattr(a, "_colorbar", None) is not None]
    assert len(bars) == 1
    return bars[0]


def items_of(rounds, size=8):
    return [{"y": 4 * i, "x": 4 * i, "size": size, "round": r} for i, r in enumerate(rounds)]


def purple_image(h=32, w=40):
    return np.broadcast_to(PURPLE, (h, w, 3)).copy()


@pytest.mark.parametrize(("rounds", "round_range", "ticks"), [
    ([2, 4], (1, 6), [1, 2, 3, 4, 5, 6]),
    ([3, 5, 5], None, [3, 4, 5]),  # default: the rounds drawn
    ([7], None, [7]),
    ([4], (1, 2), [1, 2, 3, 4]),  # a drawn round outside the range widens it: no colour lies
])
def test_colour_bar_has_one_colour_and_one_integer_tick_per_round(tmp_path, drawn, rounds, round_range, ticks):
    figures.draw_queries(purple_image(), items_of(rounds), tmp_path / "q.png", round_range=round_range)
    bar = colorbar(drawn[-1])
    assert bar.get_ticks().tolist() == ticks
    assert [t.get_text() for t in bar.ax.get_yticklabels()] == [str(t) for t in ticks]
    assert bar.ax.get_yticks(minor=True).size == 0
    assert bar.cmap.N == len(ticks)
    # Each round's band is centred on its tick.
    assert bar.norm.boundaries.tolist() == [t - 0.5 for t in ticks] + [ticks[-1] + 0.5]


def test_many_rounds_get_whole_round_ticks_only(tmp_path, drawn):
    figures.draw_queries(purple_image(), items_of([1, 40]), tmp_path / "q.png")
    ticks = [t for t in colorbar(drawn[-1]).get_ticks() if 0.5 <= t <= 40.5]
    assert 2 <= len(ticks) <= 16
    assert all(float(t).is_integer() for t in ticks)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 15, 40])
def test_round_colours_are_bright_and_far_from_the_stain(n):
    colors = figures._round_colors(n)
    assert colors.shape == (n, 3)
    assert stain_distance(colors).min() > 0.5
    assert min(luminance(255 * c) for c in colors) > 0.5


def test_revealed_pixels_on_purple_stain_do_not_look_purple(tmp_path, drawn):
    image = purple_image()
    figures.draw_queries(image, items_of([1, 2, 3, 4, 5]), tmp_path / "q.png", round_range=(1, 5))
    ax = drawn[-1].axes[0]
    shown = np.asarray(ax.images[0].get_array())
    assert shown.shape == image.shape
    revealed = np.zeros(image.shape[:2], dtype=bool)
    for item in items_of([1, 2, 3, 4, 5]):
        revealed[item["y"]:item["y"] + item["size"], item["x"]:item["x"] + item["size"]] = True
    assert stain_distance(shown[revealed]).min() > 0.35
    # The rest of the image is left as it is.
    np.testing.assert_allclose(shown[~revealed], image[~revealed] / 255)
    # The colour bar shows the same colours the pixels are tinted with.
    assert stain_distance(colorbar(drawn[-1]).cmap(np.arange(5))).min() > 0.5


def test_ground_truth_is_a_thick_line_on_a_contrasting_halo(tmp_path, drawn):
    mask = np.zeros((32, 40), dtype=int)
    mask[8:24, 10:30] = 1
    figures.draw_queries(purple_image(), items_of([1]), tmp_path / "q.png", mask=mask)
    ax = drawn[-1].axes[0]
    haloed = [c for c in ax.collections if c.get_path_effects()]
    assert len(haloed) == 1
    truth = haloed[0]
    width = float(np.max(truth.get_linewidth()))
    assert width >= 2.0
    (stroke, *_) = truth.get_path_effects()
    assert stroke._gc["linewidth"] >= width + 2
    line, halo = truth.get_edgecolor()[0], to_rgb(stroke._gc["foreground"])
    assert abs(luminance(255 * np.asarray(line)) - luminance(255 * np.asarray(halo))) > 0.6
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["queried area", "ground truth"]


def test_draw_queries_keeps_its_validation(tmp_path):
    image = purple_image()
    with pytest.raises(ValueError, match=r"'mask' parameter of draw_queries.*\(32, 40\)"):
        figures.draw_queries(image, items_of([1]), tmp_path / "q.png", mask=np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"item\(s\) \[0\] miss one of the keys"):
        figures.draw_queries(image, [{"y": 0, "x": 0, "size": 4}], tmp_path / "q.png")


def test_draw_queries_without_items_draws_the_image_alone(tmp_path, drawn):
    figures.draw_queries(purple_image(), [], tmp_path / "q.png")
    fig = drawn[-1]
    assert not any(getattr(a, "_colorbar", None) for ax in fig.axes for a in (ax, *ax.child_axes))


# --- project overviews ----------------------------------------------------------------------------


@pytest.fixture
def calls(monkeypatch):
    """Every text and filled rectangle draw_overview draws, in order: (kind, args, kwargs, draw)."""
    seen = []
    for kind in ("text", "rectangle"):
        original = getattr(ImageDraw.ImageDraw, kind)

        def record(self, *args, _original=original, _kind=kind, **kwargs):
            seen.append((_kind, args, kwargs, self))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(ImageDraw.ImageDraw, kind, record)
    return seen


def region(name, box, rank=1):
    return Region(name=name, round=int(name[1]), rank=rank, score=0.5, image="a", box=box, pool_index=rank)


def test_overview_labels_every_region_by_its_name(calls):
    image = purple_image(120, 200)
    regions = [region("R1-002", (10, 10, 74, 74), 2), region("R2-007", (42, 42, 106, 106), 7),
               region("R3-010", (150, 60, 200, 120), 10)]
    png = draw_overview(image, regions)
    with Image.open(io.BytesIO(png)) as picture:
        size = picture.size
    texts = [(args, kwargs, draw) for kind, args, kwargs, draw in calls if kind == "text"]
    assert [args[1] for args, _, _ in texts] == ["R1-002", "R2-007", "R3-010"]
    boxes = [kwargs for kind, _, kwargs, _ in calls if kind == "rectangle" and kwargs.get("fill") is not None]
    assert len(boxes) == 3
    for (args, kwargs, draw), box in zip(texts, boxes):
        # Dark text on a light box.
        assert luminance(kwargs["fill"]) < 0.2 < 0.6 < luminance(box["fill"])
        # The whole name inside the picture, even for the region at its right edge.
        left, top, right, bottom = draw.textbbox(args[0], args[1], font=kwargs["font"])
        assert 0 <= left and 0 <= top and right <= size[0] and bottom <= size[1]
    # Names are drawn after every outline: no outline of an overlapping region crosses one.
    kinds = [kind if kind == "text" or kwargs.get("fill") is not None else "outline" for kind, _, kwargs, _ in calls]
    assert kinds.index("text") > max(i for i, k in enumerate(kinds) if k == "outline")


def test_overview_text_grows_with_the_image(calls):
    sizes = []
    for side in (200, 800):
        calls.clear()
        draw_overview(purple_image(side, side), [region("R1-001", (0, 0, side // 4, side // 4))])
        (font,) = [kwargs["font"] for kind, _, kwargs, _ in calls if kind == "text"]
        sizes.append(font.size)
    assert sizes[1] >= 3 * sizes[0]


def test_overview_label_box_is_the_region_colour_with_dark_text():
    image = np.full((100, 160, 3), 255, dtype=np.uint8)
    png = draw_overview(image, [region("R1-001", (20, 20, 90, 90))])
    with Image.open(io.BytesIO(png)) as picture:
        pixels = np.asarray(picture.convert("RGB"))
    colours = {tuple(p) for p in pixels[20:40, 20:90].reshape(-1, 3)}
    assert tuple(REGION_CLASS["color"]) in colours
    assert min(luminance(c) for c in colours) < 0.2
