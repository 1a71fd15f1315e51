"""Checkpoints: one safetensors file holding weights, training state and JSON metadata.

Tensors (module weights, optimiser moments, RNG state) are stored by safetensors; everything
else (configuration, vocabulary hash, epoch, the optimiser's non-tensor state) is JSON in the
file's header, beside a sha256 of that JSON and of every tensor. Nothing is unpickled on
loading, and nothing in a file is trusted before it is checked: the checksum first (a damaged
file is refused), then the JSON's nesting depth (before parsing it, since Python's parser
recurses; safetensors bounds the header's size), then its structure. What a run's metadata
must hold is checked by :mod:`fabula.run.load` with :func:`check_arguments`; the weights' names
and shapes are checked against the modules they are loaded into. Every refusal is a
:class:`~fabula.errors.RunError` naming the file and the field.

Files are written to a temporary name and renamed over the old one, so a crash never leaves a
half-written checkpoint. A file is read through one open descriptor, its checksum and tensors
from the same bytes, so a checkpoint renamed over it meanwhile (a trainer committing the next
epoch) is never mixed into the one being read.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import hashlib
import inspect
import json
import math
import os
import re
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from fabula.errors import RunError

_TENSOR = "__tensor__"
_ITEMS = "__items__"
#: the deepest nesting a header may have (real ones nest about 12 deep; Python's parser recurses)
MAX_DEPTH = 64
MAX_ITEMS = 1024  #: the longest list or string a saved setting or constructor argument may be
MAX_SIZE = 2**31  #: the largest integer a header may hold (constructor integers are tensor sizes)
TEMPORARY = re.compile(r"\..+\.tmp\d+")  #: the names :func:`temporary_path` gives
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def field_error(path: Path, field: str, problem: str) -> RunError:
    """The one-line refusal of ``field`` of the checkpoint at ``path``."""
    return RunError(f"{path}: field {field!r} {problem}")


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


def _unflatten(obj, tensors: dict, path: Path, field: str):
    """The structure :func:`_flatten` stored, refusing references to no stored tensor and
    malformed ``(key, value)`` lists."""
    if isinstance(obj, dict):
        if _TENSOR in obj:
            name = obj[_TENSOR]
            if set(obj) != {_TENSOR} or not isinstance(name, str) or not name.startswith("state/"):
                raise field_error(path, field, "is not a reference to a stored tensor")
            if name not in tensors:
                raise field_error(path, field, f"refers to tensor {name!r}, which the file lacks")
            return tensors[name]
        if _ITEMS in obj:
            items = obj[_ITEMS]
            pairs = isinstance(items, list) and all(
                isinstance(i, list) and len(i) == 2 and isinstance(i[0], str | int | float | bool | None)
                for i in items
            )
            if set(obj) != {_ITEMS} or not pairs:
                raise field_error(path, field, "is not a list of [key, value] pairs")
            return {k: _unflatten(v, tensors, path, f"{field}/{k}") for k, v in items}
        return {k: _unflatten(v, tensors, path, f"{field}/{k}") for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors, path, f"{field}/{i}") for i, v in enumerate(obj)]
    return obj


@contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Torch's generators (CPU, and ``device`` when it is a GPU) restored after the block, so
    that draws made inside it leave the caller's random stream as it was."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield


def rng_state(device: torch.device | None = None) -> dict:
    """The torch RNG states that Pyro samples from: the CPU generator's and, for a CUDA
    ``device``, that device's (not every visible GPU's: a data-parallel rank touches its own)."""
    state = {"cpu": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    """Restore :func:`rng_state`'s states (a CUDA state only onto a CUDA ``device``)."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def temporary_path(path: Path) -> Path:
    """Where :func:`atomic_write` writes ``path`` before renaming it (named by the writer's pid)."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)``, flush the result to disk and rename it to ``path``. On failure
    the temporary file is removed and ``path`` is as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with suppress(OSError):  # a failed clean-up must not hide why the write failed
            tmp.unlink(missing_ok=True)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


@dataclass
class Checkpoint:
    """A checkpoint file as read back and verified: its ``metadata`` (the JSON header), the
    ``weights`` of each saved module by name, and the training ``state`` (optimizer, schedule,
    RNG) with its tensors back in place (:func:`load_checkpoint`)."""

    path: Path
    metadata: dict
    weights: dict[str, dict[str, torch.Tensor]]
    state: dict

    def check_fits(self, modules: dict[str, torch.nn.Module]) -> None:
        """Refuse stored weights that ``modules`` (by the names they were saved under; built on
        the meta device, they need no memory) would not take: a missing or unknown name, or
        another shape or dtype."""
        for name, module in modules.items():
            expected = module.state_dict()
            if name not in self.weights and not expected:
                continue  # a module without weights (e.g. the empty guide) stores nothing
            if name not in self.weights:
                raise RunError(f"{self.path}: no weights for {name!r} (it has {sorted(self.weights)})")
            saved = self.weights[name]
            for key in sorted(expected.keys() | saved.keys()):
                field = f"weights/{name}/{key}"
                if key not in saved:
                    raise field_error(self.path, field, "is missing")
                if key not in expected:
                    raise field_error(self.path, field, f"is not a weight of the rebuilt {name}")
                have, want = saved[key], expected[key]
                if have.shape != want.shape or have.dtype != want.dtype:
                    raise field_error(
                        self.path,
                        field,
                        f"is {have.dtype} {list(have.shape)}; the rebuilt {name} has {want.dtype} {list(want.shape)}",
                    )

    def load_into(self, modules: dict[str, torch.nn.Module]) -> None:
        """Load the stored weights into ``modules`` (by the names they were saved under), once
        :meth:`check_fits` has found that they fit."""
        self.check_fits(modules)
        for name, module in modules.items():
            if name in self.weights:
                module.load_state_dict(self.weights[name])


def _digest(text: str, tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of the JSON header ``text`` and of every tensor: name, dtype, shape and bytes."""
    digest = hashlib.sha256(text.encode())
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"\0{name}\0{tensor.dtype}\0{list(tensor.shape)}\0".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def encode(tensors: dict[str, torch.Tensor], text: str) -> bytes:
    """The safetensors file of ``tensors`` with the JSON header ``text`` and their sha256."""
    return save(tensors, metadata={"fabula": text, "sha256": _digest(text, tensors)})


def save_checkpoint(
    path: str | Path, modules: dict[str, torch.nn.Module], state: dict, metadata: dict
) -> None:
    """Write ``modules``' weights, the training ``state`` (tensors allowed) and JSON ``metadata``."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"weights/{name}/{key}"] = value.detach().cpu().clone().contiguous()
    header = {"metadata": metadata, "state": _flatten(state, tensors, "state")}
    data = encode(tensors, json.dumps(header))
    atomic_write(Path(path), lambda tmp: _write_bytes(tmp, data))


def _depth(text: str) -> int:
    """How deep the JSON ``text`` nests, found without parsing it."""
    depth = deepest = 0
    for token in _JSON_TOKEN.finditer(text):
        bracket = token.group()
        if bracket in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif bracket in ("]", "}"):
            depth -= 1
    return deepest


def _parse(path: Path, text: str) -> dict:
    """The JSON header ``text``, refused unless it nests at most :data:`MAX_DEPTH` deep (checked
    before parsing) and is ``{"metadata": {...}, "state": ...}``."""
    deepest = _depth(text)
    if deepest > MAX_DEPTH:
        raise field_error(
            path, "fabula", f"nests {deepest} deep (a checkpoint's header nests at most {MAX_DEPTH})"
        )
    try:
        header = json.loads(text)
    except json.JSONDecodeError as e:
        raise field_error(path, "fabula", f"is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise field_error(path, "fabula", f"is a JSON {type(header).__name__}, not an object")
    wrong = sorted({"metadata", "state"} ^ set(header))
    if wrong:
        raise field_error(
            path, wrong[0], "is missing" if wrong[0] not in header else "is not a checkpoint field"
        )
    if not isinstance(header["metadata"], dict):
        raise field_error(path, "metadata", "is not a JSON object")
    return header


def _header(text: str) -> dict:
    """A safetensors header, the JSON ``text``, parsed only once shown to nest no deeper than a
    header may."""
    if _depth(text) > MAX_DEPTH:
        raise ValueError("the safetensors header nests too deep")
    header = json.loads(text)
    if not isinstance(header, dict):
        raise ValueError("the safetensors header is not a JSON object")
    return header


def _stored(data: bytes) -> dict:
    """The string metadata of the safetensors file ``data`` (its header's length in 8
    little-endian bytes, then the header), once safetensors has checked the header."""
    size = int.from_bytes(data[:8], "little")
    return _header(data[8 : 8 + size].decode()).get("__metadata__") or {}


def peek_metadata(path: str | Path) -> dict | None:
    """The metadata of the checkpoint at ``path`` as its header says, reading neither its tensors
    nor its checksum: unverified, for a cheap look before a decision that
    :func:`load_checkpoint` then confirms. ``None`` where the header cannot be read."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if size > os.fstat(f.fileno()).st_size:
                return None
            text = f.read(size).decode()
        return _parse(Path(path), _header(text)["__metadata__"]["fabula"])["metadata"]
    except (OSError, ValueError, KeyError, TypeError):  # RunError is an OSError
        return None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (safetensors only, no pickle; tensors
    on the CPU), refusing a damaged or malformed one in one line naming the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no checkpoint")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:  # removed since it was looked at
        raise RunError(f"{path}: no checkpoint") from None
    except OSError as e:
        raise RunError(f"{path}: cannot read it ({e.strerror})") from None
    try:
        tensors = load(data)  # safetensors checks the header and every tensor's extent first
        stored = _stored(data)
    except (SafetensorError, ValueError) as e:
        raise RunError(f"{path}: not a fabula checkpoint ({e})") from None
    if set(stored) == {"fabula"}:
        raise RunError(f"{path}: has no checksum to verify it by (written by an older fabula?)")
    if set(stored) != {"fabula", "sha256"}:
        raise RunError(f"{path}: not a fabula checkpoint (its header holds {sorted(stored)})")
    if _digest(stored["fabula"], tensors) != stored["sha256"]:
        raise RunError(f"{path}: damaged: its contents do not match the sha256 in its header")
    header = _parse(path, stored["fabula"])
    weights: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        kind, _, rest = key.partition("/")
        name, _, param = rest.partition("/")
        if kind == "weights" and name and param:
            weights.setdefault(name, {})[param] = value
        elif kind != "state":
            raise field_error(path, key, "is a tensor that is neither a weight nor training state")
    return Checkpoint(path, header["metadata"], weights, _unflatten(header["state"], tensors, path, "state"))


def parameters_of(target) -> dict[str, tuple[object, bool]]:
    """``{name: (annotation, required)}`` of a settings dataclass's fields, or of a class's
    constructor arguments."""
    if dataclasses.is_dataclass(target):
        hints = typing.get_type_hints(target)
        return {
            f.name: (
                hints[f.name],
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(target)
        }
    hints = typing.get_type_hints(target.__init__)
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {
        p.name: (hints[p.name], p.default is p.empty)
        for p in inspect.signature(target).parameters.values()
        if p.kind in named
    }


def _plain_json(value, depth: int) -> bool:
    """Whether ``value`` is a JSON object of strings, finite numbers, booleans, ``None`` and lists
    or objects of them, nested at most ``depth`` deep and each at most :data:`MAX_ITEMS` long."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) < 2**63
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return len(value) <= MAX_ITEMS
    if depth == 0 or not isinstance(value, list | dict) or len(value) > MAX_ITEMS:
        return False
    items = value.items() if isinstance(value, dict) else enumerate(value)
    return all(isinstance(k, int | str) and _plain_json(v, depth - 1) for k, v in items)


def _fits(value, hint, sizes: bool) -> bool:
    """Whether the JSON ``value`` is of type ``hint`` (lists for sequences; bounded lengths;
    with ``sizes``, integers in [0, :data:`MAX_SIZE`))."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a, sizes) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return type(value) is int and (0 <= value < MAX_SIZE if sizes else abs(value) < 2**64)
    if hint is float:
        return type(value) in (int, float) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str) and len(value) <= MAX_ITEMS
    if origin in (list, tuple, collections.abc.Sequence):
        return (
            isinstance(value, list)
            and len(value) <= MAX_ITEMS
            and all(_fits(v, args[0], sizes) for v in value)
        )
    if hint is dict:  # a JSON object of plain values (a guide's description of a site)
        return isinstance(value, dict) and _plain_json(value, depth=3)
    if origin is dict:
        return (
            isinstance(value, dict)
            and len(value) <= MAX_ITEMS
            and all(_fits(k, args[0], sizes) and _fits(v, args[1], sizes) for k, v in value.items())
        )
    return False


def check_arguments(path: Path, field: str, values, parameters: dict, sizes: bool = False) -> None:
    """Refuse the saved ``values`` at ``field`` of the checkpoint at ``path`` unless they are a
    JSON object that ``parameters`` (:func:`parameters_of`) take: no unknown or missing names,
    each value of its annotated type, lists and strings at most :data:`MAX_ITEMS` long and, with
    ``sizes`` (constructor arguments), integers in [0, :data:`MAX_SIZE`)."""
    if not isinstance(values, dict):
        raise field_error(path, field, "is not a JSON object")
    for name in values:
        if name not in parameters:
            raise field_error(path, f"{field}/{name}", f"is unknown (known: {', '.join(parameters)})")
    for name, (hint, required) in parameters.items():
        if name not in values:
            if required:
                raise field_error(path, f"{field}/{name}", "is missing")
            continue
        if not _fits(values[name], hint, sizes):
            shown = json.dumps(values[name])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            bounds = f", or out of [0, {MAX_SIZE})" if sizes else ""
            kind = getattr(hint, "__name__", str(hint))
            raise field_error(path, f"{field}/{name}", f"is {shown}: not {kind}{bounds}")
