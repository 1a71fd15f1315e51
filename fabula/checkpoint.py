"""Checkpoints: one safetensors file holding weights, training state and JSON metadata.

Tensors (module weights, optimiser moments, RNG state) are stored by safetensors; everything
else (configuration, vocabulary hash, epoch, the optimiser's non-tensor state) is JSON in the
file's header. Nothing is unpickled on loading. Files are written to a temporary name and
renamed over the old one, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from fabula.errors import RunError

_TENSOR = "__tensor__"
_ITEMS = "__items__"


def _flatten(obj, tensors: dict, prefix: str):
    """Replace tensors in a nested structure by references into ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().clone().contiguous()
        return {_TENSOR: prefix}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and _TENSOR not in obj and _ITEMS not in obj:
            return {k: _flatten(v, tensors, f"{prefix}/{k}") for k, v in obj.items()}
        return {_ITEMS: [[k, _flatten(v, tensors, f"{prefix}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, list | tuple):
        return [_flatten(v, tensors, f"{prefix}/{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in a checkpoint")


def _unflatten(obj, tensors: dict):
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _ITEMS in obj:
            return {k: _unflatten(v, tensors) for k, v in obj[_ITEMS]}
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


@contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Torch's generators (CPU, and ``device`` when it is a GPU) restored after the block, so
    that draws made inside it leave the caller's random stream as it was."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield


def rng_state() -> dict:
    """The torch RNG state(s) that Pyro samples from."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` and rename the result to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class Checkpoint:
    metadata: dict
    weights: dict[str, dict[str, torch.Tensor]]
    state: dict

    def load_into(self, modules: dict[str, torch.nn.Module]) -> None:
        """Load the stored weights into ``modules`` (by the names they were saved under)."""
        for name, module in modules.items():
            if name not in self.weights and not module.state_dict():
                continue  # a module without weights (e.g. the empty guide) stores nothing
            if name not in self.weights:
                raise RunError(f"checkpoint has no weights for {name!r} (it has {sorted(self.weights)})")
            module.load_state_dict(self.weights[name])


def save_checkpoint(
    path: str | Path, modules: dict[str, torch.nn.Module], state: dict, metadata: dict
) -> None:
    """Write ``modules``' weights, the training ``state`` (tensors allowed) and JSON ``metadata``."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"weights/{name}/{key}"] = value.detach().cpu().clone().contiguous()
    header = {"metadata": metadata, "state": _flatten(state, tensors, "state")}
    atomic_write(
        Path(path),
        lambda tmp: save_file(tensors, str(tmp), metadata={"fabula": json.dumps(header)}),
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (safetensors only, no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {})["fabula"])
        tensors = load_file(str(path), device=str(map_location))
    except (SafetensorError, KeyError, json.JSONDecodeError) as e:
        raise RunError(f"{path}: not a fabula checkpoint ({e})") from None
    weights: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        kind, _, rest = key.partition("/")
        if kind == "weights":
            name, _, param = rest.partition("/")
            weights.setdefault(name, {})[param] = value
    return Checkpoint(header["metadata"], weights, _unflatten(header["state"], tensors))
