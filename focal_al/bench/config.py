"""Bench configuration: presets, the Table 1 strategy table, and validation."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

#: Where the source tree's GlaS copy lies (an editable install beside ``shared/``).
DEFAULT_GLAS_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "glas"


def default_glas_dir() -> Path:
    """The GlaS release used without ``--data-dir``: ``FOCAL_AL_GLAS_DIR``, else ``../shared/data/glas``
    from the working directory, else the source tree's copy (an installed package has none)."""
    import os

    if os.environ.get("FOCAL_AL_GLAS_DIR"):
        return Path(os.environ["FOCAL_AL_GLAS_DIR"])
    beside = Path("..") / "shared" / "data" / "glas"
    return beside if beside.is_dir() else DEFAULT_GLAS_DIR

SPLITS = ("mixed", "testA", "testB")
DATASETS = ("synthetic", "glas", "folder")


@dataclass(frozen=True)
class BenchStrategy:
    """One line of the experiment: a registered strategy, its parameters and its network.

    Parameters
    ----------
    key : str
        The name used on the command line and in records (``7-focannot``).
    label : str
        The display name in figures and reports.
    strategy : str
        The registered strategy it runs (``focal_al.registry.get_strategy``).
    network : {"ed-convnet", "fcn"}
        The segmentation network the strategy trains and is evaluated with.
    params : dict
        Extra keyword arguments for the strategy's selector.
    """

    key: str
    label: str
    strategy: str
    network: str = "ed-convnet"
    params: dict = field(default_factory=dict)


#: Table 1 of the paper, plus the two random baselines every claim is measured against.
TABLE1 = {
    s.key: s
    for s in (
        BenchStrategy("random-image", "Random images", "random-image"),
        BenchStrategy("random-patch", "Random patches", "random-patch"),
        BenchStrategy("random-foreground", "Random patches, foreground-aware (oracle-assisted)", "random-foreground"),
        BenchStrategy("1-image-iu", "1 Image IU", "image-iu"),
        BenchStrategy("2-sa-fcn", "2 SA (FCN)", "sa", network="fcn"),
        BenchStrategy("3-sa", "3 SA (ED-ConvNet)", "sa"),
        BenchStrategy("4-iu", "4 Patch IU", "iu"),
        BenchStrategy("5-iu-id", "5 IU+ID", "iu-id"),
        BenchStrategy("6-cluster-equal", "6 IU+ID, equal clusters", "cluster-equal"),
        BenchStrategy("7-focannot", "7 FocAnnot", "focannot"),
    )
}

#: Short aliases accepted on the command line: the Table 1 numbers and the registry names.
ALIASES = {**{k.split("-", 1)[0]: k for k in TABLE1 if k[0].isdigit()}, **{s.strategy: k for k, s in TABLE1.items()}}


@dataclass(frozen=True)
class BenchConfig:
    """Everything one ``focal-al bench`` invocation needs; every field is a CLI option.

    Costs (``budget``, ``step``) are fractions of all training pixels; with ``step_unit="patches"``
    a round queries ``step`` of the patches instead (the paper's T; see ``queries_per_round``).
    ``scoring="images"`` pools the per-patch scores from whole-image maps (faster, approximate;
    the default ``"patches"`` scores every candidate patch exactly). ``threads`` is torch's CPU
    thread count (results depend on it through floating-point reduction order, so it is recorded
    with every round). ``fast_path``: the network runs in ``channels_last`` with BatchNorm folded for
    inference (``SegmentationNet(fast_path=True)``, the default); False computes as runs made before
    it did (plain NCHW). The two give float32-close but not identical numbers, so it is part of the
    protocol: runs pair only with runs computed the same way. ``semi_supervised``: each round also
    learns from the pool's unlabelled pixels (``SegmentationNet(semi_supervised=...)``); full
    supervision, the ceiling, stays supervised. ``budget_cap``: the last query of a patch-level run
    keeps, in a seeded random order, only as many of its patches as reach ``budget`` (the run ends
    less than one patch above it); False queries a whole step and can end up to a step above. None
    (the default) is what the folder's runs used (False for folders made before the option), else
    True. Image-level strategies query whole images and can overshoot either way.

    Training recipe of a round (the library's default ``SegmentationNet`` recipe, run by
    ``PatchActiveLearner.teach``): ``epochs`` passes over the labelled patches in gradient steps of
    ``batch_size``, at least ``train_steps`` (``initial_train_steps`` in round 0) and at most
    ``max_train_steps``; ``epochs=None`` takes exactly ``train_steps`` per round. The learning
    rate warms up and decays along a cosine within each round (``lr_schedule``), so each round
    ends on a converged net. ``warm_start``: continue from the previous round's weights and
    optimizer state (True), or retrain from scratch every round (False). Full supervision, the
    ceiling, trains with the same recipe on every patch for ``full_supervision_epochs`` passes
    (default ``epochs``), without the cap.
    """

    preset: str = "quick"
    dataset: str = "synthetic"
    data_dir: str | None = None
    split: str = "mixed"
    images_dir: str | None = None
    masks_dir: str | None = None
    mask_suffix: str = ""
    test_fraction: float = 0.2
    n_images: int = 24
    image_size: int = 160
    scale: float = 1.0
    patch_size: int = 32
    overlap: float = 0.5
    clusters: int = 3
    lam: float = 0.5
    candidate_ratio: float = 2.0
    budget: float = 0.3
    step: float = 0.025
    step_unit: str = "pixels"
    scoring: str = "patches"
    width: int = 8
    depth: int = 3
    train_steps: int = 60
    initial_train_steps: int = 120
    epochs: float | None = None
    max_train_steps: int | None = None
    lr_schedule: str = "cosine"
    warm_start: bool = True
    full_supervision_epochs: float | None = None
    tta: bool = False
    gradients: bool = False
    dropout: float = 0.0
    mc_samples: int = 0
    batch_size: int = 16
    lr: float = 1e-3
    sa_ensemble: int = 4
    strategies: tuple = ("random-patch", "1-image-iu", "4-iu", "7-focannot")
    seeds: tuple = (0,)
    device: str = "auto"
    fast_path: bool = True
    semi_supervised: str | None = None
    reset_every: int | None = None
    budget_cap: bool | None = None
    threads: int | None = None
    out_dir: str = "bench-out"

    def replace(self, **changes: Any) -> "BenchConfig":
        """A copy with ``changes`` applied (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["strategies"] = list(self.strategies)
        out["seeds"] = list(self.seeds)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "BenchConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown bench config keys {unknown}; expected some of {sorted(known)}.")
        data = dict(data)
        for key in ("strategies", "seeds"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def validate(self) -> "BenchConfig":
        """Check every field; raise one ``ValueError`` listing all problems."""
        problems = []

        def check(ok, name, expected):
            if not ok:
                problems.append(f"'{name}' must be {expected}; got {getattr(self, name)!r}")

        check(self.preset in PRESETS, "preset", f"one of {sorted(PRESETS)}")
        check(self.dataset in DATASETS, "dataset", f"one of {DATASETS}")
        check(self.split in SPLITS, "split", f"one of {SPLITS}")
        check(0 < self.test_fraction < 1, "test_fraction", "in (0, 1)")
        check(self.n_images >= 2, "n_images", "at least 2")
        check(self.image_size >= 16, "image_size", "at least 16")
        check(0 < self.scale <= 4, "scale", "in (0, 4]")
        check(self.patch_size >= 2 ** self.depth, "patch_size", f"at least 2**depth = {2 ** self.depth}")
        check(self.patch_size % 2 ** self.depth == 0, "patch_size", f"a multiple of 2**depth = {2 ** self.depth}")
        check(0 <= self.overlap < 1, "overlap", "in [0, 1)")
        check(self.clusters >= 1, "clusters", "at least 1")
        check(0 <= self.lam <= 1, "lam", "in [0, 1]")
        check(self.candidate_ratio >= 1, "candidate_ratio", ">= 1 (Q >= T)")
        check(0 < self.step <= self.budget <= 1, "budget", f"in [step = {self.step}, 1]")
        check(0 < self.step < 1, "step", "in (0, 1)")
        check(self.step_unit in ("pixels", "patches"), "step_unit", "'pixels' or 'patches'")
        check(self.scoring in ("patches", "images"), "scoring", "'patches' or 'images'")
        check(self.width >= 1 and self.depth >= 1, "width", "positive (and depth positive)")
        check(self.train_steps >= 1, "train_steps", "at least 1")
        check(self.initial_train_steps >= 1, "initial_train_steps", "at least 1")
        check(self.epochs is None or self.epochs > 0, "epochs", "positive (or None: exactly train_steps per round)")
        check(self.max_train_steps is None or self.max_train_steps >= max(self.train_steps, self.initial_train_steps),
              "max_train_steps", "None or at least train_steps and initial_train_steps")
        check(self.lr_schedule in ("cosine", "constant"), "lr_schedule", "'cosine' or 'constant'")
        check(self.semi_supervised in (None, "fixmatch", "self-training"), "semi_supervised",
              "None, 'fixmatch' or 'self-training'")
        check(isinstance(self.fast_path, bool), "fast_path", "True or False")
        check(self.budget_cap in (None, True, False), "budget_cap", "None, True or False")
        check(self.reset_every is None or (isinstance(self.reset_every, int) and self.reset_every >= 1),
              "reset_every", "None or an int >= 1 (retrain from fresh weights every that many rounds)")
        check(0 <= self.dropout < 1, "dropout", "in [0, 1)")
        check(self.mc_samples == 0 or (self.mc_samples >= 2 and self.dropout > 0), "mc_samples",
              "0, or at least 2 with dropout > 0 (MC dropout samples the network's dropout)")
        check(self.full_supervision_epochs is None or self.full_supervision_epochs > 0, "full_supervision_epochs",
              "positive (or None: --epochs)")
        check(self.batch_size >= 1, "batch_size", "at least 1")
        check(self.lr > 0, "lr", "positive")
        check(self.sa_ensemble >= 2, "sa_ensemble", "at least 2")
        check(self.threads is None or self.threads >= 1, "threads", "at least 1 (or None: torch's choice)")
        check(len(self.seeds) >= 1, "seeds", "at least one seed")
        check(len(self.strategies) >= 1, "strategies", "at least one strategy")
        if self.dataset == "folder":
            check(self.images_dir is not None, "images_dir", "given with --dataset folder")
            check(self.masks_dir is not None, "masks_dir", "given with --dataset folder (with --mask-suffix it "
                                                           "defaults to --images-dir)")
        if problems:
            raise ValueError("Invalid bench configuration:\n  - " + "\n  - ".join(problems))
        return self


PRESETS: dict[str, dict] = {
    # The built-in synthetic data and a small network, three seeds, budget 20 % in steps of 4 %,
    # 30-50 steps per round: 5.3 minutes on 2 CPU cores beside another experiment (5.3 min of CPU).
    "quick": dict(n_images=32, seeds=(0, 1, 2), budget=0.2, step=0.04, epochs=4.0, train_steps=30,
                  initial_train_steps=50, max_train_steps=50, full_supervision_epochs=8.0),
    # GlaS at half resolution: full supervision converges (Dice 0.913); one strategy with one seed to 30 %
    # takes 11-15 minutes on one thread on the fast path (40-55 on the plain path; random patches 15 rounds).
    # Each round: 4 passes over the labelled patches, 250 to 500 steps, warm-up + cosine.
    "glas-cpu": dict(
        dataset="glas", split="mixed", scale=0.5, patch_size=64, overlap=0.5, clusters=3, lam=0.5,
        budget=0.3, step=0.025, width=16, depth=4, train_steps=250, initial_train_steps=500, max_train_steps=500,
        epochs=4.0, full_supervision_epochs=12.0, batch_size=16,
        strategies=("random-image", "random-patch", "1-image-iu", "3-sa", "4-iu", "5-iu-id", "6-cluster-equal",
                    "7-focannot"),
        seeds=(0, 1, 2),
    ),
    # The paper's scale: full resolution, width 64, l = 128, budget 50 % (needs a GPU).
    "paper": dict(
        dataset="glas", split="mixed", scale=1.0, patch_size=128, overlap=0.5, clusters=3, lam=0.5,
        budget=0.5, step=0.025, step_unit="patches", width=64, depth=4, train_steps=500, initial_train_steps=2000,
        batch_size=16,
        strategies=tuple(TABLE1), seeds=(0, 1),
    ),
}

#: Table 2 of the paper: side length, overlap and number of clusters, scaled by the preset's resolution.
GRID = {"patch_size": (64, 128, 256), "overlap": (0.0, 0.5), "clusters": (3, 5)}


def preset_config(name: str, **overrides: Any) -> BenchConfig:
    """The configuration of preset ``name`` with ``overrides`` applied (``None`` values ignored)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; expected one of {sorted(PRESETS)}.")
    return BenchConfig(preset=name, **PRESETS[name]).replace(**overrides)


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
# Characters kept as they are in a key (a run folder's name); any other is %-escaped.
_KEY_SAFE = "-_.+"


def parse_value(text: str):
    """A strategy parameter from the command line: int, float, bool (true/false), None (none) or str.

    ``"5"`` -> 5, ``"0.5"`` / ``"1e-3"`` -> float, ``"true"`` / ``"false"`` -> bool and ``"none"``
    -> None (any case), anything else (a criterion name) -> the string itself.
    """
    if _INTEGER.fullmatch(text):
        return int(text)
    if _NUMBER.fullmatch(text):
        return float(text)
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    return text


def _format_value(value) -> str:
    from urllib.parse import quote

    if value is None or isinstance(value, bool):
        return str(value).lower()
    return quote(repr(value) if isinstance(value, float) else str(value), safe=_KEY_SAFE)


def split_top_level(text: str, *, sep: str = ",") -> list[str]:
    """Split ``text`` on ``sep`` outside parentheses: ``"a(k=1,b=2),c"`` -> ``["a(k=1,b=2)", "c"]``.

    Items are stripped and empty ones dropped; unbalanced parentheses raise ``ValueError``.
    """
    items, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"Unbalanced parentheses in {text!r}: a ')' closes nothing.")
        if char == sep and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise ValueError(f"Unbalanced parentheses in {text!r}: a '(' is never closed.")
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def parse_strategy_spec(spec: str) -> tuple[str, dict]:
    """Split ``"name(key=value,...)"`` into the name and its parameters (values by :func:`parse_value`).

    A plain ``"name"`` (or ``"name()"``) has no parameters.
    """
    text = spec.strip()
    if "(" not in text and ")" not in text:
        return text, {}
    match = re.fullmatch(r"([^()]+)\((.*)\)", text)
    if match is None:
        raise ValueError(
            f"Strategy {spec!r} must read name(key=value,...), e.g. 'focannot(k=5,uncertainty=iu)'."
        )
    name, params = match.group(1).strip(), {}
    for item in split_top_level(match.group(2)):
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key.isidentifier() or not value or "(" in value or ")" in value:
            raise ValueError(
                f"Strategy {spec!r}: parameter {item!r} must read key=value (a Python name, '=', a value without "
                "parentheses), e.g. 'k=5'."
            )
        if key in params:
            raise ValueError(f"Strategy {spec!r} gives the parameter {key!r} twice.")
        params[key] = parse_value(value)
    return name, params


def resolve_strategy(name: str) -> BenchStrategy:
    """The bench strategy for a Table 1 key, number or registry name, with optional parameters.

    ``name`` is a Table 1 key (``7-focannot``), its number (``7``), a registry name (``focannot``,
    or any strategy a plugin registered), optionally followed by parameters of the strategy's
    selector: ``focannot(uncertainty=my-criterion,k=5)``. Values are parsed by
    :func:`parse_value`; criteria are named by their registry names. The parameters are checked
    against the selector's signature and the registry
    (:func:`focal_al.registry.check_strategy_params`) here, so a misspelt parameter or an unknown
    criterion is refused (``ValueError``) before anything runs.

    The key of a strategy with parameters (its run folders are ``runs/<key>-seed<seed>``) is the
    canonical form ``<base>(<key>=<value>,...)``: ``<base>`` is the Table 1 key when the name is a
    Table 1 key, number or its registry name (``7-focannot``), else the registry name; parameters
    sorted by name; values written back in a canonical form (``5``, ``0.5``, ``true``, ``none``,
    strings as given) with any character outside letters, digits and ``-_.+`` %-escaped, so the
    key is a safe file name and the same spec always gets the same key
    (``focannot(uncertainty=my-criterion,k=5)`` -> ``7-focannot(k=5,uncertainty=my-criterion)``).
    """
    from focal_al.registry import check_strategy_params, get_strategy

    base_name, params = parse_strategy_spec(name)
    if base_name in TABLE1:
        base = TABLE1[base_name]
    elif base_name in ALIASES:
        base = TABLE1[ALIASES[base_name]]
    else:
        get_strategy(base_name)  # raises with close matches when unknown
        base = BenchStrategy(base_name, base_name, base_name)
    if not params:
        return base
    try:
        check_strategy_params(base.strategy, params)
    except (TypeError, KeyError) as err:
        raise ValueError(f"Strategy {name!r}: {err}") from err
    canonical = ",".join(f"{key}={_format_value(params[key])}" for key in sorted(params))
    shown = ", ".join(f"{key}={params[key]}" for key in sorted(params))
    return dataclasses.replace(base, key=f"{base.key}({canonical})", label=f"{base.label} ({shown})",
                               params={**base.params, **params})
