"""What the API reference documents: fabula's public modules and their public names.

Shared by the documentation build (``conf.py`` generates one reference page per public module
from it) and the test that every public name has a docstring, so the two cannot disagree.

* A **public module** is ``fabula`` or any module below it whose dotted path has no part that
  starts with an underscore (``fabula.__main__`` is not one).
* Its **public names** are its ``__all__`` where it has one; otherwise the classes and functions
  defined in it and the constants assigned at its top level, whose names do not start with an
  underscore (names it imports are documented where they are defined).
* A public name's **home** is the module whose page documents it in full: the public module
  it is imported from (``from fabula.x import name``) or that defines it, where that module
  counts it among its own public names, else the module that lists it (a re-export from
  outside fabula).
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import pkgutil
from pathlib import Path

PACKAGE = "fabula"


def is_public_path(dotted: str) -> bool:
    """Whether no part of the dotted path starts with an underscore."""
    return not any(part.startswith("_") for part in dotted.split("."))


@functools.cache
def public_modules(package: str = PACKAGE) -> tuple[str, ...]:
    """The dotted names of ``package`` and its public submodules, sorted."""
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=package + "."):
        if is_public_path(info.name):
            names.append(info.name)
    return tuple(sorted(names))


@functools.cache
def assigned_names(module_name: str) -> tuple[str, ...]:
    """Names bound by assignments at the top level of a module's source (its constants)."""
    module = importlib.import_module(module_name)
    try:
        source = Path(inspect.getsourcefile(module)).read_text(encoding="utf-8")
    except (TypeError, OSError):
        return ()
    names = []
    for node in ast.parse(source).body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Name):
                    names.append(leaf.id)
    return tuple(dict.fromkeys(names))


def defines(module_name: str, obj) -> bool:
    """Whether ``obj`` is a class or function defined in the module ``module_name``."""
    return (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(
        obj, "__module__", None
    ) == module_name


@functools.cache
def public_names(module_name: str) -> tuple[str, ...]:
    """The public names of a public module (see the module's docstring)."""
    module = importlib.import_module(module_name)
    explicit = getattr(module, "__all__", None)
    if explicit is not None:
        return tuple(explicit)
    names = []
    constants = set(assigned_names(module_name))
    for name, obj in vars(module).items():
        if name.startswith("_") or inspect.ismodule(obj):
            continue
        if defines(module_name, obj) or (
            name in constants and not inspect.isclass(obj) and not callable(obj)
        ):
            names.append(name)
    return tuple(names)


@functools.cache
def imports(module_name: str) -> dict[str, str]:
    """The names a module imports from fabula's modules (``from fabula.x import y``), each with
    the module it imports it from."""
    module = importlib.import_module(module_name)
    try:
        source = Path(inspect.getsourcefile(module)).read_text(encoding="utf-8")
    except (TypeError, OSError):
        return {}
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(PACKAGE):
            for alias in node.names:
                if alias.name == alias.asname or alias.asname is None:
                    found[alias.name] = node.module
    return found


def home(module_name: str, name: str) -> str:
    """The module whose reference page documents ``module_name.name`` in full."""
    obj = getattr(importlib.import_module(module_name), name)
    source = imports(module_name).get(name)
    if (
        source
        and source in public_modules()
        and name in public_names(source)
        and getattr(importlib.import_module(source), name) is obj
    ):
        return home(source, name)
    owner = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if (
        (inspect.isclass(obj) or inspect.isfunction(obj))
        and owner
        and owner != module_name
        and owner in public_modules()
        and qualname in public_names(owner)
    ):
        return owner
    return module_name


def documented_here(module_name: str) -> tuple[str, ...]:
    """The public names of a module that its page documents in full."""
    return tuple(n for n in public_names(module_name) if home(module_name, n) == module_name)


def canonical(dotted: str) -> str | None:
    """The documented full name of a public object given by any public path to it
    (``fabula.inference.Amortized`` -> ``fabula.inference.presets.Amortized``), or ``None``."""
    for module_name in sorted(public_modules(), key=len, reverse=True):
        if dotted.startswith(module_name + "."):
            rest = dotted[len(module_name) + 1 :]
            head, _, tail = rest.partition(".")
            if head not in public_names(module_name):
                return None
            target = home(module_name, head)
            obj = getattr(importlib.import_module(module_name), head)
            qualname = getattr(obj, "__qualname__", head) if target != module_name else head
            return ".".join(filter(None, [target, qualname, tail]))
    return None


@functools.cache
def _attribute_docs(module_name: str) -> dict[str, str]:
    """The documentation of a module's top-level assignments, found where Sphinx's autodoc
    finds it: ``#:`` comment lines just above the assignment, a ``#:`` comment after it on its
    line, or a string literal on the statement right after it."""
    module = importlib.import_module(module_name)
    try:
        source = Path(inspect.getsourcefile(module)).read_text(encoding="utf-8")
    except (TypeError, OSError):
        return {}
    lines = source.splitlines()
    body = ast.parse(source).body
    docs = {}
    for i, node in enumerate(body):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        above, row = [], node.lineno - 2
        while row >= 0 and lines[row].lstrip().startswith("#:"):
            above.insert(0, lines[row].lstrip()[2:].strip())
            row -= 1
        first = lines[node.lineno - 1]
        trailing = first.split("#:", 1)[1].strip() if "#:" in first else ""
        after = ""
        following = body[i + 1] if i + 1 < len(body) else None
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            after = following.value.value
        text = " ".join(filter(None, [" ".join(above), trailing, after])).strip()
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Name) and text:
                    docs[leaf.id] = text
    return docs


def _generated_docstring(obj) -> bool:
    """Whether a class's docstring is the one Python writes for a dataclass or a named tuple
    that has none (its signature)."""
    doc = obj.__doc__ or ""
    try:
        signature = str(inspect.signature(obj)).replace(" -> None", "")
    except (TypeError, ValueError):
        return False
    fields = ", ".join(getattr(obj, "_fields", ()))
    return doc in (obj.__name__ + signature, f"{obj.__name__}({fields})")


def docstring(module_name: str, name: str) -> str:
    """The documentation the reference shows for ``module_name.name`` ("" where it has none):
    a class's or function's own docstring (not one inherited, nor the signature Python writes
    for a dataclass), a module's docstring, or a constant's doc comment in its home module."""
    obj = getattr(importlib.import_module(module_name), name)
    if inspect.isclass(obj):
        return "" if _generated_docstring(obj) else (vars(obj).get("__doc__") or "").strip()
    if inspect.isfunction(obj) or inspect.ismodule(obj) or inspect.isroutine(obj):
        return (obj.__doc__ or "").strip()
    return _attribute_docs(home(module_name, name)).get(name, "")
