"""The experiment protocol of ``focal-al bench`` (SPEC "Protocol and cost"), resumable round by round.

One *run* is one strategy under one seed. Round 0 trains on the initial labelled set (random whole
training images covering about one step of the training pixels, the same for every strategy under a
seed); each later round scores the pool once, queries, reveals the ground truth of what was queried
(cost = union of revealed pixels), trains, and evaluates on the whole test images. The loop itself
is ``PatchActiveLearner``'s (query -> teach), with a simulated annotator: the store's ground truth.
This module keeps only the protocol: seeds, the initial set, records, checkpoints, resume and
evaluation. After every round the run's state (labelled set, revealed pixels, records,
weights) is committed atomically, so a run killed at any moment continues with ``resume=True`` from
its last completed round and ends exactly as an uninterrupted run: every round reseeds the network
and the strategy from ``(seed, round)``, and the weights and the optimizer's state are saved together.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from skorch.callbacks import Callback

from focal_al.bench.config import GRID, BenchConfig, BenchStrategy, default_glas_dir, resolve_strategy
from focal_al.bench.records import atomic_write_json
from focal_al.registry import strategy_takes
from focal_al.progress import RoundsBar, TrainingProgress, progress_bar, shows_progress

STATE_VERSION = 1
#: Config fields that define a run's protocol: resuming with any of them changed is refused. The
#: budget is not one of them: ``--resume`` with a larger budget continues a finished run further.
PROTOCOL_FIELDS = (
    "dataset", "data_dir", "split", "images_dir", "masks_dir", "test_fraction", "n_images", "image_size",
    "scale", "patch_size", "overlap", "clusters", "lam", "candidate_ratio", "step", "width",
    "depth", "train_steps", "initial_train_steps", "batch_size", "lr", "sa_ensemble", "step_unit", "scoring",
    "epochs", "max_train_steps", "lr_schedule", "warm_start", "tta", "dropout", "mc_samples", "gradients",
    "fast_path", "semi_supervised", "reset_every", "budget_cap",
)
#: What a run recorded before a protocol field existed computed with, where that is not the field's
#: default: runs before ``fast_path`` ran the plain eager NCHW network, and runs before ``budget_cap``
#: queried a whole step in their last round.
LEGACY_PROTOCOL = {"fast_path": False, "budget_cap": False}
#: Protocol fields that an invocation leaving them unset (None) takes from the folder's runs.
FOLDER_DEFAULTS = {"budget_cap": True}
#: Strategies that read the ground truth (``extras["foreground_fraction"]``): oracle-assisted baselines.
ORACLE_STRATEGIES = ("random-foreground",)
#: Baselines whose choice reads no score: their nets skip the scoring pass's optional extras (TTA views,
#: MC-dropout passes, gradient embeddings), which a folder's protocol turns on for the strategies that read them.
SCORE_FREE_STRATEGIES = ("random-patch", "random-image", "random-foreground")
#: Test hook: ``FOCAL_AL_BENCH_KILL_AT=<point>:<round>`` SIGKILLs the process at a named point.
KILL_ENV = "FOCAL_AL_BENCH_KILL_AT"
KILL_POINTS = ("trained", "evaluated", "weights-saved", "state-saved")


def _kill_point(point: str, round_: int) -> None:
    if os.environ.get(KILL_ENV) == f"{point}:{round_}":
        os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class BenchData:
    """The training and test images of a bench, and the training patch pool."""

    train: object  # focal_al.datasets.SegmentationDataset
    test: object
    store: object  # focal_al.store.PatchStore over ``train``


def _split(dataset, test_fraction: float, seed: int = 0):
    order = np.random.default_rng(seed).permutation(len(dataset))
    n_test = max(1, int(round(test_fraction * len(dataset))))
    if n_test >= len(dataset):
        raise ValueError(f"test_fraction={test_fraction} leaves no training image out of {len(dataset)}.")
    return dataset.subset(np.sort(order[n_test:])), dataset.subset(np.sort(order[:n_test]))


def load_data(config: BenchConfig):
    """The (train, test) datasets the config names, rescaled by ``config.scale``."""
    from focal_al import datasets

    if config.dataset == "synthetic":
        full = datasets.make_synthetic(config.n_images, size=(config.image_size, config.image_size), seed=0)
        train, test = _split(full, config.test_fraction)
    elif config.dataset == "glas":
        root = Path(config.data_dir) if config.data_dir else default_glas_dir()
        if config.split == "mixed":
            train, test = datasets.load_glas(root, "mixed-train"), datasets.load_glas(root, "mixed-test")
        else:
            train, test = datasets.load_glas(root, "train"), datasets.load_glas(root, config.split)
    else:
        folder = datasets.load_folder(config.images_dir, config.masks_dir, mask_suffix=config.mask_suffix)
        train, test = _split(folder, config.test_fraction)
    if config.scale != 1.0:
        train, test = train.rescale(config.scale), test.rescale(config.scale)
    return train, test


def _store_key(config: BenchConfig, train) -> str:
    parts = [config.patch_size, config.overlap, *train.names, *(im.shape for im in train.images)]
    parts += [int(np.asarray(im, dtype=np.uint64).sum()) for im in train.images[:3]]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def prepare_data(config: BenchConfig, out_dir: Path) -> BenchData:
    """Load the datasets and build (or reuse) the training patch store under ``out_dir/cache``."""
    from focal_al.store import PatchStore

    train, test = load_data(config)
    path = out_dir / "cache" / f"train-l{config.patch_size}-o{config.overlap:g}-{_store_key(config, train)}.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    store = None
    if path.exists():
        try:
            store = PatchStore(path)
        except (ValueError, OSError) as err:  # truncated or damaged: it is only a cache, rebuild it
            warnings.warn(f"Rebuilding the damaged patch cache {path}: {err}", UserWarning, stacklevel=2)
    if store is None:
        store = PatchStore.from_dataset(path, train, patch_size=config.patch_size, overlap=config.overlap,
                                        allow_padding=True, overwrite=True)
    return BenchData(train=train, test=test, store=store)


def describe_data(data: BenchData, config: BenchConfig) -> str:
    """One paragraph on what the bench read: images, sizes, objects per mask, patches."""
    def sizes(dataset):
        shapes = sorted({im.shape[:2] for im in dataset.images})
        text = "x".join(map(str, shapes[0]))
        return text if len(shapes) == 1 else f"{text} to {'x'.join(map(str, shapes[-1]))}"

    def objects(dataset):
        counts = [len(np.unique(m[m > 0])) for m in dataset.masks]
        if min(counts) == max(counts):
            return f"{counts[0]} object{'s' if counts[0] != 1 else ''} per mask"
        return f"{min(counts)}-{max(counts)} objects per mask (median {int(np.median(counts))})"

    def images(n, what):
        return f"{n} {what} image{'s' if n != 1 else ''}"

    return (f"Read {images(len(data.train), 'training')} ({sizes(data.train)} px after scale {config.scale:g}, "
            f"{objects(data.train)}; {len(data.store)} patches of {config.patch_size} px) and "
            f"{images(len(data.test), 'test')} ({sizes(data.test)} px, {objects(data.test)}).")


# ----------------------------------------------------------------------------------- protocol


def initial_images(image_shapes, step: float, seed: int) -> np.ndarray:
    """Random whole training images covering about ``step`` of the training pixels (at least one).

    The images are taken in a seeded random order until the covered fraction is as close to
    ``step`` as it gets; it depends on the seed and the image sizes only, so every strategy of a
    seed starts from the same labelled set.
    """
    sizes = np.array([h * w for h, w in image_shapes], dtype=np.float64)
    order = np.random.default_rng([seed, 7919]).permutation(len(sizes))
    covered = np.cumsum(sizes[order]) / sizes.sum()
    n = int(np.argmin(np.abs(covered - step))) + 1
    return np.sort(order[:n])


def initial_set(store, step: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The seed's initial labelled set, the same for every strategy: ``(images, patches)``, one empty.

    Random whole images covering about one ``step`` of the training pixels (:func:`initial_images`);
    when even the closest set of whole images covers more than two steps (a dataset of a few large
    images), random patches whose area is one step instead, so that every run starts near one step
    (one large image was 4-21 % of a 15-tile dataset, above a whole 15 % budget for one seed).
    """
    shapes = store.image_shapes
    total = float(sum(int(h) * int(w) for h, w in shapes))
    images = initial_images(shapes, step, seed)
    if sum(int(shapes[i][0]) * int(shapes[i][1]) for i in images) / total <= 2 * step:
        return images, np.empty(0, dtype=np.intp)
    n = min(len(store), max(1, int(round(step * total / store.patch_size**2))))
    patches = np.random.default_rng([seed, 7919, 1]).choice(len(store), size=n, replace=False)
    return np.empty(0, dtype=np.intp), np.sort(patches).astype(np.intp)


def make_net(config: BenchConfig, network: str, seed: int, *, score_extras: bool = True):
    """A fresh segmentation network for a run (ED-ConvNet or the FCN of Suggestive Annotation).

    ``score_extras=False`` leaves out what ``--tta``, ``--mc-samples`` and ``--gradients`` add to the
    scoring pass (8 views, T dropout passes, gradient embeddings) for a strategy that reads none of
    it: training is the same, and so are the entropies and descriptors of the one plain pass.
    """
    from focal_al.estimator import SegmentationNet
    from focal_al.nets import FCN, EDConvNet

    module = {"ed-convnet": EDConvNet, "fcn": FCN}[network]
    if config.epochs is None:
        steps = dict(steps_per_epoch=config.train_steps)
    else:
        steps = dict(passes_per_epoch=config.epochs, min_steps_per_epoch=config.train_steps,
                     max_steps_per_epoch=config.max_train_steps)
    if network == "ed-convnet" and config.dropout:
        steps["module__dropout"] = config.dropout
    return SegmentationNet(
        module,
        module__width=config.width,
        module__depth=config.depth,
        lr=config.lr,
        lr_schedule=config.lr_schedule,
        batch_size=config.batch_size,
        max_epochs=1,
        warm_start=config.warm_start,
        score_tta=config.tta and score_extras,
        score_gradients=config.gradients and score_extras,
        mc_samples=config.mc_samples if network == "ed-convnet" and score_extras else 0,
        random_state=seed,
        device=config.device,
        fast_path=config.fast_path,
        threads=config.threads,
        semi_supervised=config.semi_supervised,
        **steps,
    )


def round_start(learner, config: BenchConfig, round_: int) -> None:
    """Warm start or not for this round's training: ``warm_start``, except every ``reset_every``-th
    round, which retrains from fresh weights (a periodic reset; Ash & Adams, NeurIPS 2020, found that
    warm-started training can lock in a poor start)."""
    reset = bool(config.reset_every) and round_ > 0 and round_ % int(config.reset_every) == 0
    learner.warm_start = bool(config.warm_start) and not reset


def seed_round(net, config: BenchConfig, seed: int, round_: int, *, salt: int = 0) -> None:
    """Seed a round's training (batches, augmentation; the weights too when retraining from
    scratch) from ``(seed, round)``, and set its step floor: a resumed round trains identically."""
    floor = config.initial_train_steps if round_ == 0 else config.train_steps
    steps = {"steps_per_epoch": floor} if config.epochs is None else {"min_steps_per_epoch": floor}
    net.set_params(random_state=_round_seed(seed, round_, salt), **steps)


def queries_per_round(config: BenchConfig, level: str, n_patches: int, n_images: int, n_pixels: int) -> int:
    """How many patches (or images) one round queries: ``step`` of the pool.

    ``step_unit="patches"`` is the paper's T = step x the number of patches. With overlapping
    patches that reveals several times ``step`` of the pixels per round (at rho = 0.5 a patch set
    of 2.5 % of the patches covers up to about 10 % of the pixels), so ``step_unit="pixels"``
    queries the number of patches whose area is ``step`` of the training pixels: a round then
    reveals at most ``step`` of the pixels and the learning curve has points at the low budgets.
    Image-level strategies query ``step`` of the training images either way.
    """
    if level == "image":
        return max(1, int(round(config.step * n_images)))
    if config.step_unit == "pixels":
        return max(1, int(round(config.step * n_pixels / config.patch_size**2)))
    return max(1, int(round(config.step * n_patches)))


def _round_seed(seed: int, round_: int, salt: int = 0) -> int:
    return int(np.random.default_rng([seed, round_, salt]).integers(2**31 - 1))


def train_on(net, store, patches: np.ndarray) -> float:
    """Continue training ``net`` on the given patches with its recipe (SA's bootstrap copies, full
    supervision); returns seconds. The active-learning rounds train through ``learner.teach``."""
    start = time.perf_counter()
    idx = np.sort(patches)
    if not net.initialized_:
        net.initialize()
    net.partial_fit(store.patches[idx], store.labels[idx])
    return time.perf_counter() - start


def evaluate(net, test) -> dict:
    """Pixel and object metrics of the net on the whole test images (no partitioning)."""
    from focal_al.metrics import evaluate_segmentation

    preds = [p.argmax(axis=0).astype(np.uint8) for p in net.predict_images(test.images)]
    metrics = evaluate_segmentation(preds, test.masks)
    return {k: float(metrics[k]) for k in ("dice", "voe", "object_f1", "object_dice")}


def _sa_scores(config, net, store, labelled_patches, train_images, seed, round_):
    """Suggestive Annotation's image scores: an ensemble of bootstrap copies of the current net.

    Each of ``config.sa_ensemble`` copies continues from the current weights on a bootstrap
    resample of the labelled patches with the round's recipe; the disagreement of an image is the
    per-pixel variance of the copies' foreground probabilities, averaged over its pixels, and its
    descriptor the mean of the copies' descriptors.
    """
    import copy

    from focal_al.scores import PoolScores

    rng = np.random.default_rng([seed, round_, 4242])
    fg, descriptors = [], []
    for member in range(config.sa_ensemble):
        twin = copy.deepcopy(net)
        boot = rng.choice(labelled_patches, size=len(labelled_patches), replace=True)
        seed_round(twin, config, seed, round_, salt=100 + member)
        train_on(twin, store, boot)
        proba, desc = twin.predict_images(train_images, return_descriptors=True)  # one pass per copy
        descriptors.append(desc)
        fg.append([p[1] for p in proba])
    # SA selects by disagreement and descriptors only; the uncertainty fields are the current net's.
    base = net.score_images(train_images)
    disagreement = np.array([np.mean(np.var(np.stack([m[i] for m in fg]), axis=0)) for i in range(len(train_images))])
    return PoolScores(entropy=base.entropy, margin=base.margin, least_confidence=base.least_confidence,
                      descriptors=np.mean(descriptors, axis=0), extras={"disagreement": disagreement})


def _cluster_criteria(config, descriptors, seed, round_) -> tuple[float, float]:
    """Mean CU (Eq. 6) and CD (Eq. 7) over the k clusters of the candidates' descriptors (Fig. 5)."""
    from focal_al.registry import get_criterion
    from focal_al.selection import kmeans

    k = min(config.clusters, len(descriptors))
    labels, centroids = kmeans(descriptors, k, rng=np.random.default_rng([seed, round_, 17]))
    cu = get_criterion("cu")(descriptors, labels, centroids)
    cd = get_criterion("cd")(descriptors, labels, centroids) if k > 1 else np.zeros(1)
    return float(np.mean(cu)), float(np.mean(cd))


# ----------------------------------------------------------------------------------- one run


def load_checkpoint(learner, path: Path) -> None:
    """Restore a run's learner from its checkpoint: ``PatchActiveLearner.save``'s file (labelled rows,
    revealed pixels, labels, weights, optimiser), or an older ``torch.save`` of the weights and the
    optimiser, whose learner state the caller restores first from ``state.json``."""
    from focal_al.weights import read_metadata

    try:
        learner.estimator.initialize()
        if read_metadata(path).get("learner"):
            learner.load(path)
        else:
            learner.estimator.load_weights(path, optimizer=True)
    except (ValueError, FileNotFoundError) as err:
        raise ValueError(f"Cannot load the checkpoint {path}: {err} Delete the run folder to restart it.") from err


#: The committed run state's keys and their JSON types.
STATE_SCHEMA = {
    "version": int, "strategy": str, "seed": int, "round": int, "protocol": dict, "labelled_patches": list,
    "labelled_images": list, "revealed": dict, "records": list, "queries": list, "weights": str,
    "complete": bool, "exhausted": bool,
}


def _state_problem(state) -> str | None:
    """What is wrong with a loaded ``state.json`` (None when it is well formed)."""
    if not isinstance(state, dict):
        return f"expected a JSON object, found a JSON {type(state).__name__}"
    if state.get("version") != STATE_VERSION:
        return f"state version {state.get('version')!r}, expected {STATE_VERSION}"
    missing = [k for k in STATE_SCHEMA if k not in state]
    if missing:
        return f"missing keys {missing}"
    wrong = [f"{k} ({type(state[k]).__name__}, expected {t.__name__})" for k, t in STATE_SCHEMA.items()
             if not isinstance(state[k], t) or (t is int and isinstance(state[k], bool))]
    if wrong:
        return f"wrong types: {', '.join(wrong)}"
    for key in ("labelled_patches", "labelled_images"):
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in state[key]):
            return f"{key} must hold non-negative integers"
    if not state["records"]:
        return "no round records"
    return None


class RunState:
    """A run's resumable state, committed as one JSON file after each round."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.path = run_dir / "state.json"

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            state = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"Cannot read the run state {self.path}: {err}. Delete the run folder to restart it.")
        problem = _state_problem(state)
        if problem:
            raise ValueError(f"The run state {self.path} is invalid: {problem}. Delete the folder {self.run_dir} "
                             "to restart this run (its records are lost) or restore the file.")
        return state

    def commit(self, state: dict, learner, round_: int) -> None:
        """Save the checkpoint under a new name, then atomically replace the state that points to it."""
        weights = f"weights-round{round_}.safetensors"
        learner.save(self.run_dir / weights)
        _kill_point("weights-saved", round_)
        state["weights"] = weights
        atomic_write_json(self.path, state)
        _kill_point("state-saved", round_)
        self.sync(state)

    def sync(self, state: dict) -> None:
        """Write ``rounds.json`` / ``queries.json`` from the committed state; delete stale weights.

        A kill between the state commit and these writes leaves them one round behind and an older
        weights file behind; resuming calls this again, also for a run that was already complete.
        """
        atomic_write_json(self.run_dir / "rounds.json", state["records"])
        atomic_write_json(self.run_dir / "queries.json", state["queries"])
        for stale in [*self.run_dir.glob("weights-round*.safetensors"), *self.run_dir.glob("weights-round*.pt")]:
            if stale.name != state["weights"]:
                stale.unlink(missing_ok=True)


def _existing_state(config: BenchConfig, spec: BenchStrategy, seed: int, out_dir: Path,
                    resume: bool) -> tuple[dict | None, tuple[list, list] | None]:
    """The committed state of a run, if any, else its committed records to replay (``rounds.json``,
    ``queries.json``), if any; refuses a run that may not be continued under ``config``."""
    run_dir = out_dir / "runs" / f"{spec.key}-seed{seed}"
    state = RunState(run_dir).load()
    protocol = {k: getattr(config, k) for k in PROTOCOL_FIELDS}
    if state is not None and not resume:
        # Say --resume only where it would be taken: a run of another protocol cannot be continued.
        changed = sorted(k for k in protocol if _saved_protocol_value(state.get("protocol") or {}, k) != protocol[k])
        if changed:
            raise FileExistsError(
                f"{run_dir} already holds results of {spec.key} seed {seed} made with another protocol (it differs "
                f"in {changed}); choose another --out-dir. Nothing was overwritten."
            )
        raise FileExistsError(
            f"{run_dir} already holds results of {spec.key} seed {seed}. Pass --resume to continue it, "
            f"or choose another --out-dir; nothing was overwritten."
        )
    if state is None and (run_dir / "rounds.json").exists():
        # Records committed without their state.json and weights (e.g. a run's results in git):
        # --resume replays them (:func:`_replay`); without it, they would be overwritten.
        if not resume:
            raise FileExistsError(
                f"{run_dir} already holds the records of {spec.key} seed {seed}. Pass --resume to continue "
                f"them, or choose another --out-dir; nothing was overwritten."
            )
        return None, _committed_records(run_dir, spec, seed, protocol)
    if state is not None:
        _check_protocol(run_dir, state["protocol"], protocol)
    return state, None


def _saved_protocol_value(saved: dict, key: str):
    """A protocol field as a run or folder recorded it; a field added after it was made reads as what
    that run computed with (``LEGACY_PROTOCOL``), else as the field's default."""
    defaults = {f.name: f.default for f in dataclasses.fields(BenchConfig)}
    return saved.get(key, LEGACY_PROTOCOL.get(key, defaults.get(key)))


def _numerics_hint(saved_fast_path) -> str:
    flag = "--fast-path" if saved_fast_path else "--eager-path"
    return f" Its runs were computed with {flag}: pass {flag} to continue or extend them."


def _check_protocol(run_dir: Path, saved: dict, protocol: dict) -> None:
    changed = sorted(k for k in protocol if _saved_protocol_value(saved, k) != protocol[k])
    if changed:
        hint = _numerics_hint(_saved_protocol_value(saved, "fast_path")) if "fast_path" in changed else ""
        raise ValueError(f"Cannot resume {run_dir}: its protocol differs in {changed}. Use another --out-dir.{hint}")


def _folder_config(out_dir: Path) -> dict | None:
    """The ``config.json`` of a folder that holds committed runs, or None for a new folder."""
    path = out_dir / "config.json"
    if not path.is_file() or not any((out_dir / "runs").glob("*/rounds.json")):
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"Cannot read {path} ({err}); restore it, or choose another --out-dir.") from err
    if not isinstance(saved, dict):
        raise ValueError(f"{path} does not hold a bench configuration (a JSON object); choose another --out-dir.")
    return saved


def with_folder_defaults(config: BenchConfig) -> BenchConfig:
    """``config`` with each unset ``FOLDER_DEFAULTS`` field as the folder's runs have it (a new folder:
    the default), so that adding seeds to a folder keeps its protocol without restating it."""
    unset = [key for key in FOLDER_DEFAULTS if getattr(config, key) is None]
    if not unset:
        return config
    saved = _folder_config(Path(config.out_dir))
    return config.replace(**{key: FOLDER_DEFAULTS[key] if saved is None else _saved_protocol_value(saved, key)
                             for key in unset})


def check_folder_numerics(config: BenchConfig, out_dir: Path) -> None:
    """Refuse to add runs to a folder whose runs were computed with other numerics (``fast_path``):
    the report pairs every run of a folder by seed, and such pairs would differ by the numerics too."""
    saved = _folder_config(out_dir)
    if saved is None:
        return
    recorded = _saved_protocol_value(saved, "fast_path")
    if recorded != config.fast_path:
        raise ValueError(f"{out_dir} holds runs computed with fast_path={recorded} and this invocation asks for "
                         f"fast_path={config.fast_path}; their pairs would differ by the numerics too."
                         f"{_numerics_hint(recorded)} Or choose another --out-dir.")


def _committed_records(run_dir: Path, spec: BenchStrategy, seed: int, protocol: dict) -> tuple[list, list]:
    """A run's committed ``rounds.json`` and ``queries.json``, checked to be one run's rounds 0..n
    under ``protocol`` (read from the run's ``config.json``); raises ValueError naming the file."""
    found = {}
    for name in ("rounds.json", "queries.json", "config.json"):
        path = run_dir / name
        try:
            found[name] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"Cannot replay {run_dir}: {path} cannot be read ({err}). Restore it, or delete the "
                             f"folder {run_dir} to restart this run.") from None
    records, queries, run_config = found["rounds.json"], found["queries.json"], found["config.json"]
    problem = None
    if not isinstance(records, list) or not isinstance(queries, list) or not isinstance(run_config, dict):
        problem = "expected two JSON lists and a JSON object"
    elif not records or len(records) != len(queries):
        problem = f"{len(records)} round records and {len(queries)} queries, expected as many and at least one"
    elif any(not isinstance(r, dict) or r.get("round") != i or r.get("strategy") != spec.key or r.get("seed") != seed
             for i, r in enumerate(records)):
        problem = f"rounds.json does not hold rounds 0..{len(records) - 1} of {spec.key} seed {seed}"
    elif any(not isinstance(q, dict) or q.get("round") != i or not isinstance(q.get("items"), list)
             for i, q in enumerate(queries)):
        problem = f"queries.json does not hold the queries of rounds 0..{len(queries) - 1}"
    if problem:
        raise ValueError(f"Cannot replay {run_dir}: {problem}. Delete the folder to restart this run.")
    _check_protocol(run_dir, run_config, protocol)
    return records, queries


def make_learner(config: BenchConfig, spec: BenchStrategy, seed: int, data: BenchData, net, round_of: Callable[[], int]):
    """The run's ``PatchActiveLearner``: the strategy, its level and how the round's pass scores.

    ``round_of()`` gives the current round (Suggestive Annotation seeds its ensemble with it).
    """
    from focal_al.learner import PatchActiveLearner
    from focal_al.registry import query_strategy, strategy_info
    from focal_al.scores import PoolScores

    level = strategy_info(spec.strategy).kind
    store, train = data.store, data.train
    image_index, coords = np.asarray(store.image_index), store.coords

    def sa_ensemble(learner, images, rows):
        return _sa_scores(config, learner.estimator, store, learner.train_rows_, [images[int(i)] for i in rows],
                          seed, round_of())

    def from_image_maps(learner, patches, rows):
        return learner.estimator.score_pool_from_images(train.images, image_index[rows], coords[rows], store.patch_size)

    def with_ground_truth(learner, patches, rows):
        # The simulated annotator lends its ground truth (oracle-assisted baselines only): the
        # share of foreground pixels of each patch, padding included as the store holds it.
        scores = learner.estimator.score_pool(patches[rows])
        # Sorted rows, read in blocks: sequential memmap reads, not one read per patch.
        fraction = np.concatenate([(np.asarray(store.labels[rows[a:a + 4096]]) == 1).mean(axis=(1, 2))
                                   for a in range(0, len(rows), 4096)]) if len(rows) else np.empty(0)
        return PoolScores(entropy=scores.entropy, margin=scores.margin, least_confidence=scores.least_confidence,
                          descriptors=scores.descriptors, extras={**scores.extras, "foreground_fraction": fraction})

    scorer = None
    if level == "image" and spec.strategy == "sa":
        scorer = sa_ensemble
    elif level == "patch" and spec.strategy in ORACLE_STRATEGIES:
        scorer = with_ground_truth
    elif level == "patch" and config.scoring == "images":
        scorer = from_image_maps
    return PatchActiveLearner(net, query_strategy(spec.strategy, **_strategy_params(config, spec)), store=store,
                              level=level, scorer=scorer, warm_start=config.warm_start)


def run_strategy(config: BenchConfig, spec: BenchStrategy, seed: int, data: BenchData, out_dir: Path, *,
                 resume: bool = False, accept_drift: bool = False,
                 report: Callable[[str], None] = lambda line: None,
                 on_round: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Run (or continue) one strategy under one seed to the budget; returns its round records.

    ``accept_drift``: continue a run whose replay (``resume`` of records committed without their
    weights) does not give the recorded Dice on this machine, from the replayed weights; the last
    replayed round's record notes it (``replay_drift``) and the report marks the run's pairs.
    ``on_round(records)`` is called after each round is committed, before its line is reported
    (a progress bar's hook; display only).
    """
    from focal_al.cost import RevealedPixels, boundary_map

    store, train, test = data.store, data.train, data.test
    run_dir = out_dir / "runs" / f"{spec.key}-seed{seed}"
    run_state = RunState(run_dir)
    state, committed = _existing_state(config, spec, seed, out_dir, resume)
    protocol = {k: getattr(config, k) for k in PROTOCOL_FIELDS}
    if state is not None and (state["exhausted"] or state["records"][-1]["cost"] >= config.budget - 1e-12):
        run_state.sync(state)
        return state["records"]
    if committed and committed[0][-1]["cost"] >= config.budget - 1e-12:
        return committed[0]  # a finished run's records: nothing to continue
    run_dir.mkdir(parents=True, exist_ok=True)

    def write_run_config():  # the run's own configuration: config.json at the top holds the last invocation's only
        atomic_write_json(run_dir / "config.json", {**config.to_dict(), "strategies": [spec.key], "seeds": [seed],
                                                    "versions": _versions()})

    if not committed:
        write_run_config()

    n_patches, n_images = len(store), store.n_images
    net = make_net(config, spec.network, seed, score_extras=spec.strategy not in SCORE_FREE_STRATEGIES)
    round_ = 0 if state is None else state["round"]
    learner = make_learner(config, spec, seed, data, net, lambda: round_)
    level = learner.level
    # What a query ranks: the patches of the store, or the whole training images.
    query_pool = store.patches if level == "patch" else train.images
    if committed:
        records, queries = committed
        labelled_images, drift = _replay(config, spec, seed, data, learner, records, queries, report=report,
                                         accept_drift=accept_drift, made_on=_recorded_cpu(run_dir))
        if drift:  # the last replayed round's record says from which weights the run went on
            records[-1] = {**records[-1], "replay_drift": drift}
        round_ = records[-1]["round"]
        state = _round_state(spec, seed, round_, protocol, learner, labelled_images, records, queries,
                             n_pool=len(query_pool), weights=None, done=False)
        write_run_config()
        run_state.commit(state, learner, round_)
        if state["complete"]:
            return records
    elif state is None:
        init, init_patches = initial_set(store, config.step, seed)
        labelled_images = init
        records, queries = [], [{"round": 0, "level": "image" if len(init) else "patch",
                                 "items": _initial_items(data, init, init_patches)}]
        seed_round(net, config, seed, 0)
        start = time.perf_counter()
        _teach_initial(learner, init, init_patches)
        train_seconds = time.perf_counter() - start
        _kill_point("trained", 0)
        query_seconds = 0.0
    else:
        try:
            revealed = RevealedPixels.from_dict(state["revealed"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"The run state {run_state.path} has damaged revealed pixels ({err}). Delete the "
                             f"folder {run_dir} to restart this run.") from err
        labelled = np.asarray(state["labelled_patches"], dtype=np.intp)
        labelled_images = np.asarray(state["labelled_images"], dtype=np.intp)
        if (labelled.size and labelled.max() >= n_patches) or (labelled_images.size and labelled_images.max() >= n_images) \
                or [tuple(s) for s in revealed.image_shapes] != [tuple(int(v) for v in s) for s in store.image_shapes]:
            raise ValueError(f"The run state {run_state.path} does not fit this pool ({n_patches} patches, {n_images} "
                             f"images): it was written for other data. Delete the folder {run_dir} to restart this run.")
        records, queries = state["records"], state["queries"]
        if not state["weights"].endswith(".safetensors"):  # a checkpoint of the weights alone (before 2026-12)
            learner.restore(labelled_images if level == "image" else labelled, revealed=revealed, train_rows=labelled)
        load_checkpoint(learner, run_dir / state["weights"])
    per_round = queries_per_round(config, level, n_patches, n_images, learner.revealed_.n_total)
    total_foreground = max(1, sum(int(np.count_nonzero(m)) for m in train.masks))
    boundaries = [boundary_map(m) for m in train.masks]  # the effort proxy: outline pixels revealed
    total_boundary = max(1, sum(int(np.count_nonzero(b)) for b in boundaries))
    cu_cd = (None, None)  # mean CU and CD of the last query (Fig. 5); none before the first
    takes_progress = strategy_takes(spec.strategy, "progress")

    while True:
        if state is None or round_ > state["round"]:
            start = time.perf_counter()
            metrics = evaluate(net, test)
            _kill_point("evaluated", round_)
            revealed = learner.revealed_
            labelled = learner.train_rows_
            n_foreground = sum(int(np.count_nonzero(revealed.mask(i) & (m > 0))) for i, m in enumerate(train.masks))
            n_boundary = sum(int(np.count_nonzero(revealed.mask(i) & b)) for i, b in enumerate(boundaries))
            records.append({
                "strategy": spec.key, "label": spec.label, "seed": seed, "round": round_,
                "cost": revealed.cost, "n_revealed_pixels": int(revealed.n_revealed),
                "n_revealed_foreground": n_foreground, "foreground_cost": n_foreground / total_foreground,
                "n_regions": sum(len(q["items"]) for q in queries),
                "n_revealed_boundary": n_boundary, "boundary_cost": n_boundary / total_boundary,
                "foreground_efficiency": n_foreground / max(1, int(revealed.n_revealed)),
                "n_labelled": int(len(labelled) if level == "patch" else len(labelled_images)), **metrics,
                "cu": cu_cd[0],
                "cd": cu_cd[1],
                "train_steps": int(getattr(net, "lr_total_", 0)),
                "train_seconds": train_seconds, "query_seconds": query_seconds,
                "eval_seconds": time.perf_counter() - start, "threads": _torch_threads(),
            })
            state = _round_state(spec, seed, round_, protocol, learner, labelled_images, records, queries,
                                 n_pool=len(query_pool), weights=state.get("weights") if state else None,
                                 done=revealed.cost >= config.budget - 1e-12)
            run_state.commit(state, learner, round_)
            if on_round is not None:
                on_round(records)
            report(_progress_line(spec, seed, records, config.budget))
            if round_ == 0 and (warning := _round0_warning(out_dir, spec, seed, records[0])):
                report(warning)
            if state["complete"]:
                return records

        round_ += 1
        start = time.perf_counter()
        n_query = min(per_round, len(query_pool) - len(learner.labelled_))
        # Strategies that schedule on the budget spent (clasp-pe's noise) are told where the run is.
        schedule = {"progress": budget_progress(records[0]["cost"], learner.revealed_.cost, config.budget)} \
            if takes_progress else {}
        chosen, _ = learner.query(query_pool, n_query, random_state=[seed, round_, 1], **schedule)
        if level == "patch" and config.budget_cap:
            chosen = up_to_budget(chosen, learner.revealed_, data.store, config.budget, rng=[seed, round_, 2])
        if level == "patch":
            scores, _ = learner.candidate_scores(query_pool)
            cu_cd = _cluster_criteria(config, scores.descriptors, seed, round_)
            items = _patch_items(data, chosen)
        else:
            cu_cd = (None, None)
            labelled_images = np.union1d(labelled_images, chosen)
            items = _image_items(data, chosen)
        query_seconds = time.perf_counter() - start
        queries.append({"round": round_, "level": level, "items": items})
        seed_round(net, config, seed, round_)
        round_start(learner, config, round_)
        start = time.perf_counter()
        learner.teach(chosen)  # the simulated annotator: labels come from the store's ground truth
        train_seconds = time.perf_counter() - start
        _kill_point("trained", round_)


def budget_progress(initial_cost: float, cost: float, budget: float) -> float:
    """The share of the budget spent between the initial labelled set and ``budget``, in [0, 1]."""
    return float(np.clip((cost - initial_cost) / max(budget - initial_cost, 1e-12), 0.0, 1.0))


def up_to_budget(chosen, revealed, store, budget: float, *, rng) -> np.ndarray:
    """The patches of a query that the budget allows: all of them if revealing them stays within
    ``budget``, else, in a random order seeded by ``rng``, the fewest that reach it (so a run ends
    less than one patch above its budget). The order is random, not the strategy's, because
    strategies return their choice in different orders (some by index)."""
    chosen = np.asarray(chosen, dtype=np.intp)
    image_index, coords = np.asarray(store.image_index), np.asarray(store.coords)
    order = np.random.default_rng(rng).permutation(len(chosen))
    trial = revealed.copy()
    for k, j in enumerate(order, start=1):  # the cost is kept per reveal: one patch's area per step
        trial.reveal_patches(image_index[chosen[j]], coords[chosen[j]], store.patch_size)
        if trial.cost >= budget - 1e-12:
            return chosen[np.sort(order[:k])]
    return chosen


def _image_items(data: BenchData, images) -> list[dict]:
    return [{"image": data.train.names[i], "y": 0, "x": 0, "size": None} for i in images]


def _patch_items(data: BenchData, rows) -> list[dict]:
    store, image_index = data.store, np.asarray(data.store.image_index)
    return [{"image": data.train.names[image_index[i]], "y": int(store.coords[i][0]), "x": int(store.coords[i][1]),
             "size": int(store.patch_size)} for i in rows]


def _initial_items(data: BenchData, images, patches) -> list[dict]:
    """Round 0's query record: the initial whole images, or the initial patches."""
    return _image_items(data, images) + _patch_items(data, patches)


def _teach_initial(learner, images, patches) -> None:
    if len(images):
        learner.teach_images(images)
    else:
        learner.teach_patches(patches)


def _round_state(spec: BenchStrategy, seed: int, round_: int, protocol: dict, learner, labelled_images,
                 records: list[dict], queries: list[dict], *, n_pool: int, weights: str | None, done: bool) -> dict:
    """The state committed after a round: what ``--resume`` needs to continue the run from it."""
    exhausted = len(learner.labelled_) == n_pool
    return {
        "version": STATE_VERSION, "strategy": spec.key, "seed": seed, "round": round_, "protocol": protocol,
        "labelled_patches": learner.train_rows_.tolist(), "labelled_images": np.asarray(labelled_images).tolist(),
        "revealed": learner.revealed_.to_dict(), "records": records, "queries": queries, "weights": weights,
        "complete": bool(done or exhausted), "exhausted": bool(exhausted),
    }


def _replay(config: BenchConfig, spec: BenchStrategy, seed: int, data: BenchData, learner, records: list[dict],
            queries: list[dict], *, report: Callable[[str], None], accept_drift: bool = False,
            made_on: str | None = None) -> tuple[np.ndarray, dict | None]:
    """Rebuild a run's learner from its committed records alone: retrain round by round on what each
    round queried, with the round's seeds, and check the last round's test scores against the record.
    Returns the labelled images (image-level strategies; the initial ones otherwise) and the drift:
    None where the replay gave the recorded Dice, else (only with ``accept_drift``) a dict of the
    round, the recorded and the replayed Dice, the CPU that made the run (``made_on``) and this one.

    A run's results can be committed without its weights (``state.json`` and the checkpoint are
    run-time state): ``--resume`` then continues it from its last round at the cost of its training
    (no scoring, no query), instead of restarting it. Every round reseeds training from
    ``(seed, round)``, so the replay computes what the run did, to the last digit, where the
    machine computes as the one that made it; where it does not, the replay's Dice differs from the
    record and the run is refused (its folder left as it was) rather than continued from other weights.
    """
    store, train = data.store, data.train
    run = f"{spec.key} seed {seed}"
    init, init_patches = initial_set(store, config.step, seed)
    if queries[0]["items"] != _initial_items(data, init, init_patches):
        raise ValueError(f"Cannot replay {run}: its initial set is not this data's for seed {seed} (other "
                         "images or another patch grid); use another --out-dir.")
    rows = {(name, int(y), int(x)): i for i, (name, (y, x)) in
            enumerate(zip((train.names[j] for j in np.asarray(store.image_index)), store.coords))}
    images = {name: i for i, name in enumerate(train.names)}
    labelled_images = init
    start = time.perf_counter()
    seed_round(learner.estimator, config, seed, 0)
    _teach_initial(learner, init, init_patches)
    for query in queries[1:]:
        try:
            if learner.level == "image":
                chosen = np.array([images[item["image"]] for item in query["items"]], dtype=np.intp)
                labelled_images = np.union1d(labelled_images, chosen)
            else:
                chosen = np.array([rows[item["image"], int(item["y"]), int(item["x"])] for item in query["items"]],
                                  dtype=np.intp)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"Cannot replay {run}: round {query['round']} queried {err}, which is not a "
                             f"{learner.level} of this data; use another --out-dir.") from None
        seed_round(learner.estimator, config, seed, query["round"])
        round_start(learner, config, query["round"])
        learner.teach(chosen)
        report(f"[{spec.key} seed {seed}] replayed round {query['round']} of {len(queries) - 1} "
               f"({(time.perf_counter() - start) / 60:.1f} min)")
    last = records[-1]
    metrics = evaluate(learner.estimator, data.test)
    revealed = learner.revealed_
    minutes = (time.perf_counter() - start) / 60
    if revealed.cost != last["cost"]:  # the same queries reveal the same pixels on any machine
        raise ValueError(
            f"Cannot replay {run}: retrained to round {last['round']}, it reveals cost {revealed.cost!r} where its "
            f"record says {last['cost']!r}: the records do not fit this data. Its folder is left as it was; "
            "use another --out-dir."
        )
    if metrics["dice"] == last["dice"]:
        report(f"[{spec.key} seed {seed}] replayed rounds 0-{last['round']} from the committed records in "
               f"{minutes:.1f} min: Dice {metrics['dice']:.4f} as recorded")
        return np.asarray(labelled_images, dtype=np.intp), None
    if not accept_drift:
        raise ValueError(
            f"Cannot replay {run}: retrained to round {last['round']}, it gives Dice {metrics['dice']!r} where its "
            f"record says {last['dice']!r}: this machine or these library versions compute otherwise than the one "
            f"that made the run ({made_on or 'not recorded'}), so it cannot be continued exactly. Its folder is "
            "left as it was; resume it where it was made, restart it in another --out-dir, or pass "
            "--accept-replay-drift to continue it from these weights (its pairs are then marked in the report)."
        )
    drift = {"round": last["round"], "recorded_dice": last["dice"], "replayed_dice": metrics["dice"],
             "made_on": made_on, "continued_on": _cpu()}
    report(f"[{spec.key} seed {seed}] replayed rounds 0-{last['round']} in {minutes:.1f} min: Dice "
           f"{metrics['dice']:.4f} where the record says {last['dice']:.4f} (made on {made_on or 'a CPU not recorded'}, "
           f"continued on {drift['continued_on']}); continuing from these weights (--accept-replay-drift)")
    return np.asarray(labelled_images, dtype=np.intp), drift


def _round0_warning(out_dir: Path, spec: BenchStrategy, seed: int, first: dict) -> str | None:
    """A warning when round 0 is not that of the folder's other runs of the seed.

    Round 0 is the same for every strategy of a seed (see :func:`focal_al.bench.stats.round0_difference`):
    a difference found after the first minutes says what the paired report would only say at the end.
    """
    from focal_al.bench.stats import round0_difference, strategy_network

    for path in sorted((out_dir / "runs").glob(f"*-seed{seed}/rounds.json")):
        try:
            other = json.loads(path.read_text())[0]
            if other["seed"] != seed or other["strategy"] == spec.key:
                continue
            diff = round0_difference(seed, first, other, strategy_network(other["strategy"]) == spec.network)
        except (OSError, ValueError, IndexError, KeyError, TypeError):
            continue  # a run being written, or not a run: nothing to compare with
        if diff is None:
            continue
        if diff["initial_set_differs"]:
            return (f"warning: the initial labelled set covers {100 * diff['cost']:.2f} % of the pixels, "
                    f"{other['strategy']} seed {seed}'s in this folder {100 * diff['baseline_cost']:.2f} %: the "
                    "data differ from those runs' and the two are not comparable.")
        return (f"warning: round 0 Dice {diff['dice']:.4f}, {other['strategy']} seed {seed}'s in this folder "
                f"{diff['baseline_dice']:.4f} with the same initial set and network: this machine or these "
                "library versions compute otherwise than that run's, so paired differences with it hold numerical "
                "noise (the report marks them †).")
    return None


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _strategy_params(config: BenchConfig, spec: BenchStrategy) -> dict:
    """The bench's protocol parameters that the strategy's selector accepts, then its own."""
    import inspect

    from focal_al.registry import get_strategy

    accepted = inspect.signature(get_strategy(spec.strategy)).parameters
    params = {"k": config.clusters, "lam": config.lam, "candidate_ratio": config.candidate_ratio}
    return {**{k: v for k, v in params.items() if k in accepted}, **spec.params}


def _round_seconds(record: dict) -> float:
    """A round's measured seconds: training, query and evaluation (0 where a record has no timing)."""
    return sum(record.get(key) or 0.0 for key in ("train_seconds", "query_seconds", "eval_seconds"))


def _progress_line(spec: BenchStrategy, seed: int, records: list[dict], budget: float) -> str:
    last = records[-1]
    seconds = [_round_seconds(r) for r in records[1:]]
    gains = np.diff([r["cost"] for r in records])
    eta = ""
    if len(gains) and gains.mean() > 0:
        rounds_left = max(0.0, (budget - last["cost"]) / gains.mean())
        # A round's training grows with the labelled set: the latest rounds predict the next best.
        eta = f", ~{rounds_left * np.mean(seconds[-3:]) / 60:.1f} min left"
    return (f"[{spec.key} seed {seed}] round {last['round']}: cost {100 * last['cost']:.1f}% "
            f"Dice {last['dice']:.3f} (train {last['train_seconds']:.0f}s, query {last['query_seconds']:.0f}s, "
            f"eval {last['eval_seconds']:.0f}s{eta})")


# ----------------------------------------------------------------------------------- whole bench


def _cpu() -> str:
    """The CPU model and its widest vector extension.

    torch's CPU kernels depend on the instruction set, so the same seed can give other float
    results on another CPU: runs paired by seed are bit-comparable only where this matches.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    isa = next((f for f in ("avx512f", "avx2", "avx", "sse4_2") if flags and f in flags.group(1).split()), None)
    name = model.group(1).strip() if model else (platform.processor() or platform.machine() or "unknown")
    # torch (ATen) and oneDNN can be held to an older instruction set, to compute as an older CPU does.
    caps = [f"{var}={os.environ[var]}" for var in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if os.environ.get(var)]
    detail = ", ".join(([isa] if isa else []) + caps)
    return f"{name} ({detail})" if detail else name


def _recorded_cpu(run_dir: Path) -> str | None:
    """The CPU that a run's ``config.json`` says made it (None where it does not say)."""
    try:
        return json.loads((run_dir / "config.json").read_text())["versions"]["cpu"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "cpu": _cpu()}
    # Pillow, SciPy and scikit-image read, resize and measure the images: their versions matter too.
    for dist in ("focal-al", "torch", "numpy", "scikit-learn", "skorch", "modAL-python", "POT", "h5py", "Pillow",
                 "scipy", "scikit-image"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    from focal_al.registry import list_strategies, strategy_info

    plugins = {strategy_info(n).source: strategy_info(n).version for n in list_strategies()}
    out["plugins"] = plugins
    return out


class StepProgress(Callback):
    """A skorch callback printing ``<what> step k/K, ~M min left`` about every tenth of ``total`` steps."""

    def __init__(self, total: int, report: Callable[[str], None], what: str):
        self.total, self.report, self.what = int(total), report, what

    def initialize(self):
        self.step_, self.start_ = 0, time.perf_counter()
        return self

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        if not training:
            return
        self.step_ += 1
        if self.step_ % max(1, self.total // 10) == 0 and self.step_ < self.total:
            left = (time.perf_counter() - self.start_) / self.step_ * (self.total - self.step_)
            self.report(f"{self.what} step {self.step_}/{self.total}, ~{left / 60:.1f} min left")


def full_supervision(config: BenchConfig, data: BenchData, out_dir: Path, *, seed: int = 0,
                     report: Callable[[str], None] = lambda line: None, progress: bool | None = False) -> dict:
    """Train on every training patch for as many steps as a whole run takes; the curves' ceiling.

    ``report`` gets a start line, a line about every tenth of the steps and an end line; with
    ``progress`` (None: where stdout is a terminal) a bar over the steps on stdout replaces the tenths.
    """
    path = out_dir / "full_supervision.json"
    if path.exists():
        return json.loads(path.read_text())
    net = make_net(config, "ed-convnet", seed).set_params(semi_supervised=None)  # the ceiling: every pixel labelled
    if config.epochs is None:
        n_rounds = int(np.ceil((config.budget - config.step) / config.step)) + 1
        steps = config.initial_train_steps + n_rounds * config.train_steps
    else:
        # The rounds' recipe on every patch, without the cap that bounds a round's time: converged.
        from focal_al.training import steps_for

        epochs = config.full_supervision_epochs or config.epochs
        steps = steps_for(len(data.store), config.batch_size, epochs=epochs, min_steps=config.initial_train_steps)
    report(f"[full supervision] training {steps} steps on all {len(data.store)} patches ...")
    callback = TrainingProgress("full supervision", enabled=True, stream="stdout") \
        if shows_progress(progress, sys.stdout) else StepProgress(steps, report, "[full supervision]")
    net.set_params(random_state=_round_seed(seed, 0, 99), steps_per_epoch=steps, passes_per_epoch=None,
                   callbacks=[("progress", callback)])
    seconds = train_on(net, data.store, np.arange(len(data.store)))
    result = {**evaluate(net, data.test), "train_steps": steps, "train_seconds": seconds, "seed": seed}
    atomic_write_json(path, result)
    report(f"[full supervision] {steps} steps in {seconds / 60:.1f} min: Dice {result['dice']:.3f}")
    return result


def check_protocol_fits(config: BenchConfig, data: BenchData, specs: list[BenchStrategy]) -> None:
    """Refuse, before anything is written, a protocol that the data cannot run; warn on a thin test set."""
    from focal_al.cost import RevealedPixels
    from focal_al.registry import strategy_info

    if len(data.test) < 2:
        warnings.warn(f"The test set has {len(data.test)} image: every Dice is one image's score. Use a larger "
                      "--test-fraction or more images for curves worth comparing.", UserWarning, stacklevel=2)
    # Criteria and strategies that read an extra array of the scoring pass, and the option that adds it.
    needs = {"tta": ("tta", "--tta"), "bald": ("mc_samples", "--mc-samples T --dropout p"),
             "badge": ("gradients", "--gradients")}
    for spec in specs:
        for name in (spec.strategy, *[v for v in spec.params.values() if isinstance(v, str)]):
            if name in needs and not getattr(config, needs[name][0]):
                raise ValueError(f"Strategy {spec.key} uses {name!r}, which reads an array the scoring pass adds only "
                                 f"with {needs[name][1]}; add the option (it costs scoring time).")
    image_index = np.asarray(data.store.image_index)
    clustered = [s.key for s in specs if strategy_info(s.strategy).kind == "patch" and "k" in _strategy_params(config, s)]
    for seed in config.seeds:
        init, init_patches = initial_set(data.store, config.step, seed)
        revealed = RevealedPixels(data.store.image_shapes).reveal_images(init)
        if len(init_patches):
            revealed.reveal_patches(image_index[init_patches], data.store.coords[init_patches], data.store.patch_size)
            warnings.warn(
                f"The training images are large for --step {100 * config.step:g} %: the closest set of whole images "
                f"for seed {seed} would cover more than two steps, so every run of this seed starts from "
                f"{len(init_patches)} random patches ({100 * revealed.cost:.1f} % of the pixels) instead.",
                UserWarning, stacklevel=2)
        cost = revealed.cost
        what = f"{len(init)} whole images" if len(init) else f"{len(init_patches)} random patches"
        if cost >= config.budget - 1e-12:
            raise ValueError(
                f"The initial labelled set of seed {seed} ({what}) already covers {100 * cost:.1f} % of "
                f"the training pixels, at or above --budget {100 * config.budget:g} %: no query round would run. "
                f"Raise --budget, or use more (or smaller) training images."
            )
        n_candidates = len(data.store) - int(np.sum(np.isin(image_index, init))) - len(init_patches)
        if clustered and config.clusters > n_candidates:
            raise ValueError(
                f"--clusters {config.clusters} exceeds the {n_candidates} unlabelled patches left after the initial set "
                f"of seed {seed} (strategies {clustered}); lower --clusters or use a larger pool."
            )


def run_bench(config: BenchConfig, *, resume: bool = False, quiet: bool = False,
              with_full_supervision: bool = True, jobs: int = 1, accept_drift: bool = False,
              progress: bool | None = False) -> Path:
    """Run every strategy under every seed of ``config`` into ``config.out_dir``; write the report.

    ``jobs`` > 1 runs that many (strategy, seed) runs at once, each in its own process with
    ``config.threads`` torch threads (full supervision is one more such job). Every run is seeded
    from (seed, round) alone, so its records are those of a sequential run; only the timings differ.

    Progress goes to stdout: a line per round (nothing with ``quiet``), and with ``progress`` (None:
    where stdout is a terminal) a bar above them over all rounds of all runs, or over the jobs.

    Returns the path of the Markdown report.
    """
    from focal_al.bench.report import write_report

    config = with_folder_defaults(config.validate())
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"The 'jobs' parameter of run_bench must be an integer >= 1. Got {jobs!r} instead.")
    specs = [resolve_strategy(name) for name in config.strategies]
    out_dir = Path(config.out_dir)
    check_folder_numerics(config, out_dir)
    found = {}  # each run's rounds already committed: where the bar over rounds starts
    for name, spec in zip(config.strategies, specs):  # refuse before writing anything (config.json, cache, ...)
        for seed in config.seeds:
            state, committed = _existing_state(config, spec, seed, out_dir, resume)
            found[name, seed] = state["records"] if state else committed[0] if committed else []
    out_dir.mkdir(parents=True, exist_ok=True)
    bars = not quiet and shows_progress(progress, sys.stdout)
    report = _printer(quiet, bars=bars)
    data = prepare_data(config, out_dir)
    report(describe_data(data, config) + f" {len(specs)} strategies x {len(config.seeds)} seeds.")
    check_protocol_fits(config, data, specs)
    atomic_write_json(out_dir / "config.json", {**config.to_dict(), "jobs": jobs, "versions": _versions()})
    runs = [(name, seed) for name in config.strategies for seed in config.seeds]
    started = time.perf_counter()
    if jobs == 1:
        if with_full_supervision:
            full_supervision(config, data, out_dir, report=report, progress=bars)
        # Each run's measured seconds over all its rounds, whichever process ran them: a resumed or
        # finished run found on resume still tells how long a whole run takes.
        durations = []
        with RoundsBar(found, budget=config.budget, step=config.step, enabled=bars) as rounds:
            for k, (name, seed) in enumerate(runs, start=1):
                start = time.perf_counter()

                def run_report(line, k=k, start=start):
                    seconds = _seconds_left(durations, len(runs), k, time.perf_counter() - start)
                    left = "" if seconds is None else f"; ~{seconds / 60:.0f} min left in all {len(runs)} runs"
                    report(f"run {k}/{len(runs)} {line}{left}")

                records = run_strategy(config, resolve_strategy(name), seed, data, out_dir, resume=resume,
                                       accept_drift=accept_drift, report=run_report,
                                       on_round=lambda records, run=(name, seed): rounds.update(run, records))
                rounds.update((name, seed), records, finished=True)
                if records:
                    durations.append(sum(_round_seconds(r) for r in records))
    else:
        _run_in_parallel(config, runs, out_dir, resume=resume, accept_drift=accept_drift, quiet=quiet, jobs=jobs,
                         with_full_supervision=with_full_supervision, report=report, bars=bars)
    report(f"{len(runs)} runs in {(time.perf_counter() - started) / 60:.1f} min")
    path = write_report(out_dir, query_images=dict(zip(data.train.names, data.train.images)),
                        query_masks=dict(zip(data.train.names, data.train.masks)))
    report(f"Report: {path}")
    return path


def rewrite_report(out_dir: str | Path, *, complete_only: bool = False, query_figures: bool = True,
                   data_dir: str | None = None, also_against: tuple[str, ...] = ()) -> Path:
    """Rewrite a bench folder's report from its runs, without running any (``focal-al report``).

    With ``query_figures`` the training images for Fig. 6 are read as the folder's ``config.json``
    names them (GlaS from ``data_dir`` when given). ``complete_only``, ``also_against``: see
    :func:`focal_al.bench.report.write_report`.
    """
    from focal_al.bench.report import _read_optional_json, write_report

    images = masks = None
    if not any(Path(out_dir).glob("runs/*/rounds.json")):
        raise ValueError(f"{out_dir} holds no runs (no runs/*/rounds.json): nothing to report. Run `focal-al bench "
                         f"--out-dir {out_dir}` first.")
    if query_figures:
        path = Path(out_dir) / "config.json"
        if not path.exists():
            raise ValueError(f"{path} does not exist: Fig. 6 needs the configuration to read the training "
                             "images. Pass --no-query-figures to report without it.")
        known = {f.name for f in dataclasses.fields(BenchConfig)}  # config.json adds jobs and versions
        config = BenchConfig.from_dict({k: v for k, v in _read_optional_json(path).items() if k in known})
        train, _ = load_data(config.replace(data_dir=data_dir))
        images, masks = dict(zip(train.names, train.images)), dict(zip(train.names, train.masks))
    return write_report(out_dir, query_images=images, query_masks=masks, complete_only=complete_only,
                        also_against=tuple(also_against))


def _seconds_left(durations: list[float], n_runs: int, k: int, elapsed: float) -> float | None:
    """Seconds left in all ``n_runs`` runs while run ``k`` (from 1) has run ``elapsed`` seconds here.

    The runs after it take the mean of ``durations`` (whole runs already done) each, and run ``k``
    what it has left of that mean; None before any run is done.
    """
    if not durations:
        return None
    mean = float(np.mean(durations))
    return mean * (n_runs - k) + max(0.0, mean - elapsed)


def _printer(quiet: bool, *, bars: bool = False) -> Callable[[str], None]:
    """Where progress lines go: nowhere when ``quiet``, else stdout at once (workers share it); with
    ``bars``, above the progress bars drawn on the terminal (``tqdm.write``)."""
    if quiet:
        return lambda line: None
    if not bars:
        return lambda line: print(line, flush=True)

    def write(line: str) -> None:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()

    return write


def _job(config: BenchConfig, name: str | None, seed: int, out_dir: Path, resume: bool, accept_drift: bool,
         quiet: bool, lines=None) -> float:
    """One run (or full supervision when ``name`` is None) in a worker process; returns its seconds.

    Its progress lines go to stdout, or into the queue ``lines`` for the parent to write above its bar.
    """
    import torch

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    start = time.perf_counter()
    data = prepare_data(config, out_dir)  # the parent built the patch cache: this opens it
    report = _printer(quiet) if lines is None else lines.put
    if name is None:
        full_supervision(config, data, out_dir, seed=seed, report=report)
    else:
        run_strategy(config, resolve_strategy(name), seed, data, out_dir, resume=resume, accept_drift=accept_drift,
                     report=report)
    return time.perf_counter() - start


def _run_in_parallel(config: BenchConfig, runs: list[tuple[str, int]], out_dir: Path, *, resume: bool,
                     accept_drift: bool, quiet: bool,
                     jobs: int, with_full_supervision: bool, report: Callable[[str], None], bars: bool = False) -> None:
    """Runs in ``jobs`` spawned processes; the first failure cancels what has not started and is raised.

    With ``bars``, a bar over the jobs on stdout; the workers' lines then come through a queue to be
    written above it (a worker printing itself would break the bar's line).
    """
    import multiprocessing
    import queue
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from contextlib import nullcontext

    todo = ([(None, 0)] if with_full_supervision else []) + list(runs)
    report(f"{len(todo)} jobs ({len(runs)} runs{' + full supervision' if with_full_supervision else ''}) "
           f"in {jobs} processes of {config.threads or 'default'} torch thread(s) each")
    started, done = time.perf_counter(), 0
    context = multiprocessing.get_context("spawn")

    def relay(lines) -> None:
        while lines is not None:
            try:
                report(lines.get_nowait())
            except queue.Empty:
                return

    with (context.Manager() if bars else nullcontext()) as manager, \
            ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool, \
            progress_bar(len(todo), desc="jobs", unit="job", enabled=bars, file=sys.stdout, smoothing=0) as bar:
        lines = manager.Queue() if bars else None
        futures = {pool.submit(_job, config, name, seed, out_dir, resume, accept_drift, quiet, lines): (name, seed)
                   for name, seed in todo}
        pending = set(futures)
        while pending:
            # Each job's line as it ends (and the workers' lines every second with a bar); a failure still
            # ends the wait at once.
            finished, pending = wait(pending, timeout=None if lines is None else 1.0, return_when=FIRST_COMPLETED)
            relay(lines)
            for future in finished:
                name, seed = futures[future]
                what = "full supervision" if name is None else f"{name} seed {seed}"
                error = future.exception()
                if error is not None:
                    for other in pending:
                        other.cancel()
                    kind = type(error) if isinstance(error, (ValueError, FileNotFoundError, FileExistsError)) else RuntimeError
                    raise kind(f"Bench job {what} failed: {error}") from error
                done += 1
                bar.update()
                elapsed = time.perf_counter() - started
                left = elapsed / done * (len(todo) - done)
                report(f"job {done}/{len(todo)} done: {what} in {future.result() / 60:.1f} min"
                       + (f"; ~{left / 60:.0f} min left" if done < len(todo) else ""))


def run_grid(config: BenchConfig, *, resume: bool = False, quiet: bool = False, jobs: int = 1,
             accept_drift: bool = False, progress: bool | None = False) -> list[Path]:
    """Table 2: FocAnnot over patch size x overlap x clusters, one output folder per combination.

    Patch sizes are the paper's (64, 128, 256) scaled by ``config.scale``.
    """
    reports = []
    for size in GRID["patch_size"]:
        for overlap in GRID["overlap"]:
            for k in GRID["clusters"]:
                l = int(round(size * config.scale))
                sub = config.replace(patch_size=l, overlap=overlap, clusters=k,
                                     out_dir=str(Path(config.out_dir) / f"grid-l{l}-rho{overlap:g}-k{k}"))
                reports.append(run_bench(sub, resume=resume, quiet=quiet, with_full_supervision=False, jobs=jobs,
                                         accept_drift=accept_drift, progress=progress))
    return reports
