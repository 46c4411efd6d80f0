"""One weights format for every file focal-al writes: safetensors, tensors only.

A weights file holds a network's ``state_dict`` and, where an exact resume needs it, its
optimiser's state (Adam's moments and step counts), so the bench's checkpoints, an annotation
project's weights and the files Dask workers read for distributed scoring are one format. Tensors
are stored as ``module/<name>`` and ``optimizer/<param>/<key>``; the optimiser's numbers and
parameter groups are JSON in the file's metadata. Nothing in the file is executable, so a file
from anyone can be read. Files written before this format (``torch.save`` of a ``state_dict``, or
of ``{"module", "optimizer"}``) are still read, with ``torch.load(weights_only=True)``; plain
safetensors files of a ``state_dict`` too.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

__all__ = ["FORMAT", "write_weights", "read_metadata", "read_weights", "read_weights_file"]

#: The metadata marker of files written by :func:`write_weights`.
FORMAT = "focal-al-weights-1"


def _flatten_optimizer(state: dict) -> tuple[dict, dict]:
    import torch

    tensors, numbers = {}, {}
    for param, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{param}/{key}"] = value.detach().cpu().contiguous()
            else:
                numbers.setdefault(str(param), {})[key] = value
    return tensors, {"numbers": numbers, "param_groups": state["param_groups"]}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for name, value in tensors.items():
        _, param, key = name.split("/", 2)
        state.setdefault(int(param), {})[key] = value
    for param, values in meta["numbers"].items():
        state.setdefault(int(param), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def write_weights(path, module_state: dict, optimizer_state: dict | None = None, *,
                  extra: dict | None = None, metadata: dict | None = None) -> Path:
    """Write a weights file atomically (a temporary file, flushed, then renamed over ``path``).

    Parameters
    ----------
    path : str or path-like
    module_state : dict of str to Tensor
        The network's ``state_dict``.
    optimizer_state : dict, optional
        The optimiser's ``state_dict``, for an exact resume.
    extra : dict of str to Tensor, optional
        Further tensors (stored as ``extra/<name>``), e.g. a learner's labels.
    metadata : dict of str to str, optional
        Further metadata (e.g. a learner's state as JSON).

    Returns
    -------
    pathlib.Path
    """
    from safetensors.torch import save

    path = Path(path)
    tensors = {f"module/{k}": v.detach().cpu().contiguous() for k, v in module_state.items()}
    tensors.update({f"extra/{k}": v.detach().cpu().contiguous() for k, v in (extra or {}).items()})
    metadata = {**(metadata or {}), "format": FORMAT}
    if optimizer_state is not None:
        flat, meta = _flatten_optimizer(optimizer_state)
        tensors.update(flat)
        metadata["optimizer"] = json.dumps(meta)
    data = save(tensors, metadata=metadata)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _is_safetensors(head: bytes) -> bool:
    # 8 bytes of little-endian header length, then the JSON header.
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1


def read_metadata(path) -> dict:
    """A weights file's metadata without reading its tensors ({} for an older ``torch.save`` file)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if not _is_safetensors(head):
        return {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"The weights file '{path}' is damaged or truncated ({exc}).") from exc


def read_weights(path, *, device="cpu") -> tuple[dict, dict | None]:
    """Read a weights file: ``(module_state, optimizer_state or None)`` (see :func:`read_weights_file`)."""
    module, optimizer, _, _ = read_weights_file(path, device=device)
    return module, optimizer


def read_weights_file(path, *, device="cpu") -> tuple[dict, dict | None, dict, dict]:
    """Read a weights file: ``(module_state, optimizer_state or None, extra tensors, metadata)``.

    Parameters
    ----------
    path : str or path-like
    device : str or torch.device
        Where the tensors go.

    Returns
    -------
    module_state : dict of str to Tensor
    optimizer_state : dict or None
        None where the file holds no optimiser state.
    extra : dict of str to Tensor
    metadata : dict of str to str

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        The file is empty, truncated or not a weights file (the message names it); nothing in it
        was executed.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weights file '{path}' does not exist.")
    with open(path, "rb") as f:
        head = f.read(9)
    if _is_safetensors(head):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(os.fspath(path), framework="pt", device=str(device)) as f:
                metadata = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            if metadata.get("format") != FORMAT:  # a plain safetensors state_dict
                return tensors, None, {}, metadata
            module = {k[len("module/"):]: v for k, v in tensors.items() if k.startswith("module/")}
            extra = {k[len("extra/"):]: v for k, v in tensors.items() if k.startswith("extra/")}
            optimizer = None
            if "optimizer" in metadata:
                optimizer = _unflatten_optimizer({k: v for k, v in tensors.items() if k.startswith("optimizer/")},
                                                 json.loads(metadata["optimizer"]))
            return module, optimizer, extra, metadata
        except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"The weights file '{path}' is damaged or truncated ({exc}).") from exc
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"Refused to load '{path}': it is not a plain weights file (only tensors are accepted; nothing "
            f"was executed)."
        ) from exc
    except Exception as exc:  # torch raises OSError, EOFError, RuntimeError... for damaged files
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"Cannot load the weights file '{path}': it is empty, truncated or not a weights "
                         f"file ({detail}).") from exc
    if isinstance(state, dict) and set(state) == {"module", "optimizer"}:
        state, optimizer = state["module"], state["optimizer"]
    else:
        optimizer = None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"'{path}' does not hold a network's weights (a state_dict of tensors).")
    return state, optimizer, {}, {}
