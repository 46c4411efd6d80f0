"""Registry of query criteria and strategies: the only global state of focal-al.

Criteria and strategies are registered by name with the decorators :func:`register_criterion` and
:func:`register_strategy`, which return the function unchanged (as timm's ``register_model``).
Installed packages contribute them through ``importlib.metadata`` entry points in the groups
``focal_al.criteria`` and ``focal_al.strategies``; the entry point names a module whose import runs
the decorators. The built-ins of focal-al load through the same entry points (named ``builtin``).
Entry points are loaded lazily, on the first lookup, so ``import focal_al`` stays cheap and a broken
plugin never breaks it: a plugin that fails to import is reported with a warning and listed by
:func:`failed_plugins` (and ``focal-al plugins``).

Set the environment variable ``FOCAL_AL_NO_PLUGIN_AUTOLOAD=1`` to load only the built-ins.

This module imports numpy only (no torch): criteria and strategies are numpy functions.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata as metadata
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

__all__ = [
    "CRITERIA_GROUP",
    "STRATEGIES_GROUP",
    "Registered",
    "UnknownNameError",
    "FailedPlugin",
    "register_criterion",
    "register_strategy",
    "get_criterion",
    "get_strategy",
    "list_criteria",
    "list_strategies",
    "criterion_info",
    "strategy_info",
    "failed_plugins",
    "load_plugins",
    "query_strategy",
]

CRITERIA_GROUP = "focal_al.criteria"
STRATEGIES_GROUP = "focal_al.strategies"
BUILTIN_DIST = "focal-al"
NO_AUTOLOAD_ENV = "FOCAL_AL_NO_PLUGIN_AUTOLOAD"
# Used when the entry-point metadata is missing (e.g. running from a source tree that was never
# installed): the built-ins must always be available.
_BUILTIN_MODULES = {CRITERIA_GROUP: "focal_al_plugins.criteria", STRATEGIES_GROUP: "focal_al_plugins.strategies"}

CRITERION_KINDS = ("instance", "cluster")
STRATEGY_LEVELS = ("patch", "image")


class UnknownNameError(KeyError):
    """An unknown criterion or strategy name (a ``KeyError`` whose message reads as plain text)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Registered:
    """One registered criterion or strategy and where it came from.

    Parameters
    ----------
    name : str
        The registry name.
    func : callable
        The function, as registered.
    category : {"criterion", "strategy"}
    kind : str
        ``"instance"`` or ``"cluster"`` for a criterion, ``"patch"`` or ``"image"`` for a strategy.
    source : str
        The distribution (package) that registered it, e.g. ``"focal-al"``; the top-level module
        name when it was registered in-process by code outside any installed distribution.
    version : str
        The version of that distribution (``""`` when unknown).
    module : str
        The module that defines ``func``.
    """

    name: str
    func: Callable
    category: str
    kind: str
    source: str
    version: str
    module: str

    @property
    def summary(self) -> str:
        """The first line of the function's docstring."""
        doc = (self.func.__doc__ or "").strip()
        return doc.splitlines()[0].strip() if doc else ""

    @property
    def origin(self) -> str:
        """``"source version (module)"``, for messages."""
        version = f" {self.version}" if self.version else ""
        return f"{self.source}{version} ({self.module})"


@dataclass(frozen=True)
class FailedPlugin:
    """An entry point that could not be loaded."""

    group: str
    entry_point: str
    value: str
    source: str
    version: str
    error: str


_CRITERIA: dict[str, Registered] = {}
_STRATEGIES: dict[str, Registered] = {}
_FAILED: list[FailedPlugin] = []
# Entry points already loaded (or tried), so each loads once; keyed by (group, name, value).
_LOADED_EPS: set[tuple[str, str, str]] = set()
# Modules imported through entry points, so that _reset can make them register again.
_EP_MODULES: set[str] = set()
_loaded = False
_loading = False
# The distribution whose entry point is being imported right now: its decorators record it.
_current_source: tuple[str, str] | None = None


def _source_of_module(module: str) -> tuple[str, str]:
    """(distribution, version) of an importable module, or (top-level module, "") when unknown."""
    top = module.split(".")[0]
    try:
        dists = metadata.packages_distributions().get(top, [])
    except Exception:  # metadata of some unrelated broken install must not break registration
        dists = []
    if dists:
        name = dists[0]
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            return name, ""
    return top, ""


def _register(table: dict, name: str, func: Callable, category: str, kind: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"A {category} name must be a non-empty string. Got {name!r} instead.")
    if not callable(func):
        raise TypeError(f"register_{category} decorates a function. Got {func!r} instead.")
    module = getattr(func, "__module__", None) or "<unknown>"
    source, version = _current_source if _current_source is not None else _source_of_module(module)
    item = Registered(name, func, category, kind, source, version, module)
    old = table.get(name)
    if old is not None:
        if old.func is func:
            return
        raise ValueError(
            f"The {category} name {name!r} is already registered by {old.origin}; "
            f"{item.origin} tries to register it again. Pick another name."
        )
    table[name] = item


def register_criterion(name: str, *, kind: Literal["instance", "cluster"] = "instance") -> Callable:
    """Decorator: register a query criterion under ``name`` and return it unchanged.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"iu"``; it must not be taken (built-ins and installed plugins load
        first, so a clash is reported here, naming both sources).
    kind : {"instance", "cluster"}
        ``"instance"``: ``criterion(scores, candidates, rng) -> ndarray of shape (len(candidates),)``;
        ``"cluster"``: ``criterion(descriptors, labels, centroids) -> ndarray of shape (k,)``.
        Higher means "ask first" / "more important".
    """
    if kind not in CRITERION_KINDS:
        raise ValueError(f"The 'kind' parameter of register_criterion must be one of {CRITERION_KINDS}. Got {kind!r} instead.")

    def decorator(func):
        _ensure_loaded()
        _register(_CRITERIA, name, func, "criterion", kind)
        return func

    return decorator


def register_strategy(name: str, *, level: Literal["patch", "image"] = "patch") -> Callable:
    """Decorator: register a query strategy (a selector) under ``name`` and return it unchanged.

    The selector is ``select(scores, n_instances, candidates, rng, **params) -> ndarray of int``:
    ``n_instances`` unique indices into the pool, all taken from ``candidates``.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"focannot"``.
    level : {"patch", "image"}
        Whether the pool rows are patches or whole images.
    """
    if level not in STRATEGY_LEVELS:
        raise ValueError(f"The 'level' parameter of register_strategy must be one of {STRATEGY_LEVELS}. Got {level!r} instead.")

    def decorator(func):
        _ensure_loaded()
        _register(_STRATEGIES, name, func, "strategy", level)
        return func

    return decorator


def _entry_points(group: str) -> list:
    """The installed entry points of ``group``, without the duplicates an editable install can show."""
    seen, out = set(), []
    for ep in metadata.entry_points(group=group):
        key = (ep.name, ep.value)
        if key not in seen:
            seen.add(key)
            out.append(ep)
    return out


def _ep_source(ep) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return _source_of_module(ep.value.split(":")[0])
    return dist.metadata["Name"] or dist.name, dist.version or ""


def _load_entry_point(group: str, ep) -> None:
    global _current_source
    key = (group, ep.name, ep.value)
    if key in _LOADED_EPS:
        return
    _LOADED_EPS.add(key)
    _EP_MODULES.add(ep.value.split(":")[0].strip())
    source, version = _ep_source(ep)
    before = (dict(_CRITERIA), dict(_STRATEGIES))
    _current_source = (source, version)
    try:
        ep.load()
    except Exception as exc:  # any error in third-party code is reported, never raised at import
        # Drop what the broken plugin registered before failing, so nothing half-loaded is used.
        _CRITERIA.clear(), _CRITERIA.update(before[0])
        _STRATEGIES.clear(), _STRATEGIES.update(before[1])
        failure = FailedPlugin(group, ep.name, ep.value, source, version, f"{type(exc).__name__}: {exc}")
        _FAILED.append(failure)
        warnings.warn(
            f"focal-al: the plugin {source} {version} (entry point {group}: {ep.name} = {ep.value}) "
            f"failed to load and is ignored: {failure.error}",
            RuntimeWarning,
            stacklevel=3,
        )
    finally:
        _current_source = None


def _autoload_disabled() -> bool:
    return os.environ.get(NO_AUTOLOAD_ENV, "").strip().lower() not in ("", "0", "false", "no")


def load_plugins() -> None:
    """Load the built-ins and (unless ``FOCAL_AL_NO_PLUGIN_AUTOLOAD`` is set) installed plugins.

    Called automatically by every lookup; calling it again loads nothing twice.
    """
    global _loaded, _loading
    if _loading:
        return
    _loading = True
    try:
        third_party = not _autoload_disabled()
        for group in (CRITERIA_GROUP, STRATEGIES_GROUP):
            eps = _entry_points(group)
            builtin = [ep for ep in eps if _ep_source(ep)[0] == BUILTIN_DIST]
            if not builtin:
                # focal-al itself is not installed with its metadata: import the built-ins directly,
                # recording them as focal-al's.
                _import_builtin(group)
            for ep in builtin:
                _load_entry_point(group, ep)
            if third_party:
                for ep in eps:
                    if _ep_source(ep)[0] != BUILTIN_DIST:
                        _load_entry_point(group, ep)
        _loaded = True
    finally:
        _loading = False


def _import_builtin(group: str) -> None:
    global _current_source
    from focal_al import __version__

    _current_source = (BUILTIN_DIST, __version__)
    try:
        importlib.import_module(_BUILTIN_MODULES[group])
    finally:
        _current_source = None


def _ensure_loaded() -> None:
    if not _loaded:
        load_plugins()


def _lookup(table: dict, name: str, category: str, lister: str) -> Registered:
    _ensure_loaded()
    try:
        return table[name]
    except (KeyError, TypeError):
        pass
    close = difflib.get_close_matches(str(name), list(table), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownNameError(
        f"Unknown {category} {name!r}.{hint} Registered: {', '.join(sorted(table)) or 'none'} "
        f"(see {lister}() or `focal-al plugins`)."
    )


def criterion_info(name: str) -> Registered:
    """The :class:`Registered` record of a criterion (function, kind, source package and version)."""
    return _lookup(_CRITERIA, name, "criterion", "list_criteria")


def strategy_info(name: str) -> Registered:
    """The :class:`Registered` record of a strategy (selector, level, source package and version)."""
    return _lookup(_STRATEGIES, name, "strategy", "list_strategies")


def get_criterion(name: str) -> Callable:
    """The criterion function registered as ``name``; unknown names raise ``KeyError`` with close matches."""
    return criterion_info(name).func


def get_strategy(name: str) -> Callable:
    """The strategy selector registered as ``name``; unknown names raise ``KeyError`` with close matches."""
    return strategy_info(name).func


def list_criteria(pattern: str = "*", *, kind: str | None = None) -> list[str]:
    """Sorted names of the registered criteria matching the glob ``pattern`` (and ``kind`` if given)."""
    _ensure_loaded()
    return sorted(n for n, r in _CRITERIA.items() if fnmatch.fnmatchcase(n, pattern) and kind in (None, r.kind))


def list_strategies(pattern: str = "*", *, level: str | None = None) -> list[str]:
    """Sorted names of the registered strategies matching the glob ``pattern`` (and ``level`` if given)."""
    _ensure_loaded()
    return sorted(n for n, r in _STRATEGIES.items() if fnmatch.fnmatchcase(n, pattern) and level in (None, r.kind))


def failed_plugins() -> list[FailedPlugin]:
    """The entry points that failed to load (each also raised a ``RuntimeWarning`` once)."""
    _ensure_loaded()
    return list(_FAILED)


def _learner_rng(learner) -> np.random.Generator:
    rng = getattr(learner, "rng_", None)
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(getattr(learner, "random_state", None))


def strategy_takes(name: str, parameter: str) -> bool:
    """Whether the strategy ``name`` takes the keyword ``parameter`` (e.g. ``"progress"``, the share
    of the budget spent, which the bench passes to the strategies that schedule on it)."""
    import inspect

    return parameter in list(inspect.signature(strategy_info(name).func).parameters)[4:]


def check_strategy_params(name: str, params: dict) -> None:
    """Refuse parameters that the strategy ``name`` does not take, and unknown criterion names.

    Checked when a strategy is composed (not at its first query, after a round of training): a
    misspelt keyword raises ``TypeError`` with close matches; a parameter whose default names a
    registered criterion (``uncertainty="iu"``) must name a registered criterion (or be a callable).
    """
    import inspect

    signature = inspect.signature(strategy_info(name).func)
    accepted = {
        p.name: p for p in list(signature.parameters.values())[4:]
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    unknown = [key for key in params if key not in accepted and not takes_any]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(accepted), n=1, cutoff=0.6)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise TypeError(
            f"Strategy {name!r} got unknown parameter(s) {', '.join(hints)}. It accepts: "
            f"{', '.join(accepted) or 'no parameters'}."
        )
    for key, value in params.items():
        default = accepted[key].default if key in accepted else None
        if isinstance(default, str) and default in _CRITERIA and not callable(value):
            if not isinstance(value, str):
                raise TypeError(
                    f"The {key!r} parameter of strategy {name!r} names a criterion: a registered name or a "
                    f"callable. Got {value!r} instead."
                )
            criterion_info(value)


def check_strategy_values(name: str, params: dict, *, option_names: dict | None = None) -> None:
    """Refuse a strategy's parameters now, not after a round of annotation: names (as
    :func:`check_strategy_params`) and values, by a trial query on small synthetic scores.

    Parameters
    ----------
    name : str
    params : dict
    option_names : dict, optional
        How each parameter is spelt where the user gave it (``{"k": "--clusters"}``), for the message.

    Raises
    ------
    ValueError
        Naming the parameter as the user gave it and what the strategy said.
    """
    from focal_al.scores import PoolScores

    spelt = ", ".join(f"{(option_names or {}).get(k, k)}={v!r}" for k, v in params.items())
    try:
        check_strategy_params(name, params)
    except TypeError as err:
        raise ValueError(f"{err} (given: {spelt}).") from err
    if strategy_info(name).kind != "patch" or not params:
        return  # no parameter of the user's to try (the trial would import scikit-learn for nothing)
    rng = np.random.default_rng(0)
    n = 64
    entropy = rng.random(n) * np.log(2)
    p = rng.random(n)
    trial = PoolScores(entropy=entropy, margin=rng.random(n), least_confidence=rng.random(n) / 2,
                       descriptors=rng.normal(size=(n, 8)).astype(np.float32),
                       extras={"class_entropy": entropy[:, None] * np.stack([1 - p, p], 1),
                               "predicted_foreground_fraction": p, "foreground_fraction": p})
    try:
        strategy_info(name).func(trial, 4, np.arange(n), rng, **params)
    except KeyError:
        pass  # scores this trial lacks (TTA views, gradients...): not a parameter problem
    except (ValueError, TypeError) as err:
        raise ValueError(f"Strategy {name!r} refuses its parameters ({spelt}): {err}") from err


def query_strategy(name: str, *, random_state=None, **params) -> Callable:
    """A modAL (0.4.1) query strategy running the registered strategy ``name``.

    The returned callable is ``strategy(learner, X_pool, n_instances=1, **kw) -> ndarray of int``
    (indices only: modAL 0.4.1's ``BaseLearner.query`` adds the rows itself). It reads the pool
    scores of the unlabelled rows from ``learner.candidate_scores(X_pool)`` when the learner has it
    (``PatchActiveLearner`` caches one network pass per round, over the unlabelled rows only), else
    from ``learner.pool_scores(X_pool)`` or ``learner.estimator.score_pool(X_pool)`` with the
    candidates all pool rows except ``learner.labelled_``. What the strategy returns is checked
    (``selection.check_selection``) before it is mapped back to pool indices.

    Parameters
    ----------
    name : str
        A registered strategy, see :func:`list_strategies`.
    random_state : int, numpy.random.Generator or None
        Seeds one generator owned by the returned callable, so successive queries draw fresh but
        reproducible numbers. When None, the learner's ``rng_`` (or ``random_state``) is used.
    **params
        Keyword parameters of the strategy (e.g. ``k=3, lam=0.5`` for ``"focannot"``); ``**kw``
        given at query time override them.

    Returns
    -------
    callable
    """
    from focal_al.selection import check_selection

    info = strategy_info(name)
    check_strategy_params(name, params)
    own_rng = None if random_state is None else np.random.default_rng(random_state)

    def strategy(learner, X_pool, n_instances: int = 1, **kw) -> np.ndarray:
        n_pool = len(X_pool)
        if n_pool == 0:
            raise ValueError(f"The pool is empty: strategy {name!r} needs at least one row in X_pool.")
        rng = own_rng if own_rng is not None else _learner_rng(learner)
        if hasattr(learner, "candidate_scores"):
            # Scores of the unlabelled rows only; the strategy picks positions among them.
            scores, candidates = learner.candidate_scores(X_pool)
            positions = np.arange(len(candidates))
            chosen = info.func(scores, n_instances, positions, rng, **{**params, **kw})
            return candidates[check_selection(chosen, n_instances, positions, len(positions),
                                              who=f"Strategy {name!r}")]
        if hasattr(learner, "pool_scores"):
            scores = learner.pool_scores(X_pool)
        elif hasattr(getattr(learner, "estimator", None), "score_pool"):
            scores = learner.estimator.score_pool(X_pool)
        else:
            raise TypeError(
                f"Strategy {name!r} needs pool scores: the learner must have pool_scores(X_pool) or an "
                f"estimator with score_pool(X_pool) (e.g. focal_al.estimator.SegmentationNet). "
                f"Got estimator {type(getattr(learner, 'estimator', None)).__name__}."
            )
        if len(scores) != n_pool:
            raise ValueError(f"The pool scores have {len(scores)} rows but X_pool has {n_pool}; expected one per row.")
        candidates = np.arange(n_pool)
        labelled = getattr(learner, "labelled_", None)
        if labelled is not None and len(labelled):
            candidates = np.setdiff1d(candidates, np.asarray(labelled, dtype=np.intp), assume_unique=True)
        return np.asarray(info.func(scores, n_instances, candidates, rng, **{**params, **kw}), dtype=np.intp)

    strategy.__name__ = f"query_strategy_{name.replace('-', '_')}"
    strategy.__qualname__ = strategy.__name__
    strategy.__doc__ = f"modAL query strategy running the focal-al strategy {name!r} with {params!r}."
    return strategy


def _reset() -> None:
    """Forget everything registered and loaded (for tests of the registry itself)."""
    global _loaded
    _CRITERIA.clear()
    _STRATEGIES.clear()
    _FAILED.clear()
    _LOADED_EPS.clear()
    _loaded = False
    for module in {*_BUILTIN_MODULES.values(), *_EP_MODULES}:
        sys.modules.pop(module, None)
    _EP_MODULES.clear()
