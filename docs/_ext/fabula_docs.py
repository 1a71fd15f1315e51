"""The parts of fabula's documentation generated when the site is built.

* ``builder-inited``: one API reference page per public module (:mod:`public_api` says which
  modules and names), written to ``docs/_generated/api/``, and the benchmark gallery's text from
  ``benchmarks/RESULTS.md`` with the plots and result files found under ``benchmarks/results/``,
  written to ``docs/_generated/results.md`` (included by ``gallery.md``).
* ``.. fabula-kinds::``: the table of registered inference kinds and their spec options, read
  from the registry (:mod:`fabula.inference.kinds`, filled by :mod:`fabula.inference.shipped`).
* ``.. fabula-cli::``: the help of the ``fabula`` command and of each subcommand, rendered from
  the parsers of :func:`fabula.cli.parser`.
* ``missing-reference``: a reference to a fabula object by any public path
  (``fabula.inference.Amortized``) or by the name it has in the referring module resolves to the
  page that documents it; a reference to an object of an external package (torch, Pyro, ...)
  is rendered as text, there being no inventory of those packages offline.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import os
import re
import sys
import textwrap
import typing
from dataclasses import MISSING, fields
from pathlib import Path

import public_api
from docutils import nodes
from docutils.statemachine import StringList
from sphinx.ext.autosummary import Autosummary
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import make_refnode, nested_parse_with_titles

logger = logging.getLogger(__name__)

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"

#: packages whose objects are referred to by fabula's docstrings and annotations, and that have no
#: inventory offline: their references render as text (``conf.py`` ignores them in nitpicky mode)
EXTERNAL = (
    "torch",
    "pyro",
    "numpyro",
    "jax",
    "jaxlib",
    "arviz",
    "numpy",
    "matplotlib",
)


# --------------------------------------------------------------------------------------------
# generated pages


def _write(path: Path, text: str, written: set[Path]) -> None:
    """Write ``text`` to ``path`` unless it holds it already (so that unchanged pages are not
    read again by an incremental build)."""
    written.add(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _title(text: str, mark: str = "=") -> list[str]:
    return [text, mark * len(text), ""]


def _is_data(obj) -> bool:
    return not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj) or callable(obj))


def api_page(module_name: str) -> str:
    """The reST of a public module's reference page: its docstring, a summary table of its
    public names (each linking to where it is documented), then each name defined here."""
    module = importlib.import_module(module_name)
    names = public_api.public_names(module_name)
    here = public_api.documented_here(module_name)
    submodules = [
        m for m in public_api.public_modules() if m.rpartition(".")[0] == module_name and m != module_name
    ]
    lines = [*_title(f"``{module_name}``"), f".. automodule:: {module_name}", "   :no-members:", ""]
    if submodules:
        lines += [".. rubric:: Modules", "", ".. fabula-summary::", "   :nosignatures:", ""]
        lines += [f"   {m[len(module_name) + 1 :]}" for m in submodules] + [""]
        lines += [".. toctree::", "   :hidden:", ""] + [f"   {m}" for m in submodules] + [""]
    if names:
        lines += [".. rubric:: Public names", "", ".. fabula-summary::", "   :nosignatures:", ""]
        for n in names:
            full = public_api.canonical(f"{module_name}.{n}") or f"{module_name}.{n}"
            if full == f"{module_name}.{n}":
                lines.append(f"   {n}")
            elif full.startswith(module_name + "."):  # autosummary refuses the page's own prefix
                lines.append(f"   ~{full[len(module_name) + 1 :]}")
            else:
                lines.append(f"   ~{full}")
        lines.append("")
    for name in here:
        obj = getattr(module, name)
        full = f"{module_name}.{name}"
        owner = getattr(obj, "__module__", "") or ""
        external = not owner.startswith(public_api.PACKAGE) and not _is_data(obj)
        if inspect.ismodule(obj):
            lines += [
                f".. py:data:: {name}",
                f"   :module: {module_name}",
                "",
                f"   The module :mod:`{obj.__name__}`, imported here once for the rest of fabula.",
                "",
            ]
        elif external:
            kind = "class" if inspect.isclass(obj) else "function"
            lines += [
                f".. py:{kind}:: {name}",
                f"   :module: {module_name}",
                "",
                f"   ``{owner}.{obj.__qualname__}``, re-exported here beside fabula's own.",
                "",
            ]
        elif inspect.isclass(obj):
            lines += [f".. autoclass:: {full}", "   :members:", "   :undoc-members:"]
            if obj.__bases__ != (object,):  # no "Bases: object" line
                lines.append("   :show-inheritance:")
            lines.append("")
        elif inspect.isfunction(obj):
            lines += [f".. autofunction:: {full}", ""]
        else:
            lines += [f".. autodata:: {full}"]
            if len(repr(obj)) > 80 or " at 0x" in repr(obj):
                lines += ["   :no-value:"]
            lines += [""]
    return "\n".join(lines)


def generate_api(written: set[Path]) -> None:
    modules = public_api.public_modules()
    for module_name in modules:
        _write(GENERATED / "api" / f"{module_name}.rst", api_page(module_name), written)


def _results_markdown() -> str:
    """``benchmarks/RESULTS.md`` as one page of the site: its title dropped (the gallery page
    has its own), its sections one level up, and the plots and JSON files of
    ``benchmarks/results/`` after it."""
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    out = []
    fence = False
    for line in lines:
        if line.lstrip().startswith("```"):
            fence = not fence
        if not fence and line.startswith("###"):
            line = line[1:]
        out.append(line)
    results = ROOT / "benchmarks" / "results"
    plots = sorted(p for p in results.rglob("*") if p.suffix.lower() in (".png", ".svg", ".jpg", ".jpeg"))
    out += ["", "## Plots", ""]
    if plots:
        for plot in plots:  # paths from the source folder's root, wherever the text is included
            out += [f"![{plot.name}](/../benchmarks/results/{plot.relative_to(results).as_posix()})", ""]
    else:
        out += ["The benchmark scripts have written no plots to `benchmarks/results/` yet.", ""]
    data = sorted(p for p in results.rglob("*.json"))
    if data:
        out += ["## Result files", "", "The JSON each section above was written from:", ""]
        for p in data:
            name = p.relative_to(results).as_posix()
            out.append(f"- {{download}}`{name} </../benchmarks/results/{name}>`")
        out.append("")
    return "\n".join(out)


def generate(app) -> None:
    written: set[Path] = set()
    generate_api(written)
    _write(GENERATED / "results.md", _results_markdown(), written)
    for path in GENERATED.rglob("*"):  # pages of modules that are gone
        if path.is_file() and path.suffix in (".rst", ".md") and path not in written:
            path.unlink()


# --------------------------------------------------------------------------------------------
# references


def _object(dotted: str):
    """The object at ``dotted`` (a module, then attributes), or ``None``."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _origin(obj) -> str:
    """The dotted module an object comes from ("" where it does not say)."""
    if inspect.ismodule(obj):
        return obj.__name__
    name = getattr(obj, "__module__", None)
    if not isinstance(name, str) and not inspect.isclass(obj):  # an instance: its class says
        name = type(obj).__module__
    return name or ""


def _external(obj) -> bool:
    return _origin(obj).partition(".")[0] in EXTERNAL


def _standard_library_link(target: str, obj, contnode):
    """A link into Python's documentation for an object of the standard library."""
    origin = _origin(obj)
    top = origin.partition(".")[0]
    if top not in sys.stdlib_module_names or top == "builtins" or not target.startswith(top):
        return None
    ref = nodes.reference(
        "", "", internal=False, refuri=f"https://docs.python.org/3/library/{top}.html#{target}"
    )
    ref += contnode
    return ref


def _private(target: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in target.split("."))


def _candidates(target: str) -> list[str]:
    """Documented full names that may stand for ``target`` (a fabula path)."""
    found = []
    full = public_api.canonical(target)
    if full:
        found.append(full)
    # an attribute that a class inherits: documented on the class that defines it
    owner, _, attr = target.rpartition(".")
    cls = _object(owner)
    if inspect.isclass(cls) and attr:
        for base in cls.__mro__:
            if attr in vars(base) and base.__module__.startswith(public_api.PACKAGE):
                found.append(f"{base.__module__}.{base.__qualname__}.{attr}")
                break
    return found


def _as_seen_from(module_name: str, target: str) -> list[str]:
    """Full names ``target`` stands for in the namespace of the module ``module_name``."""
    module = _object(module_name)
    head, _, tail = target.partition(".")
    value = getattr(module, head, None) if module is not None else None
    if value is None:
        return []
    if inspect.ismodule(value):
        return [".".join(filter(None, [value.__name__, tail]))]
    if getattr(value, "__module__", None) and getattr(value, "__qualname__", None):
        return [".".join(filter(None, [value.__module__, value.__qualname__, tail]))]
    source = public_api.imports(module_name).get(head)  # a constant imported from a fabula module
    return [".".join(filter(None, [source, head, tail]))] if source else []


def resolve(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "").lstrip(".~")
    if not re.fullmatch(r"[A-Za-z_][\w.]*", target):
        return contnode  # a piece of a quoted annotation (``'dict[str, Tensor]'``), not a name
    domain = env.get_domain("py")
    module_name = node.get("py:module")
    cls = node.get("py:class")
    tries = [target]
    if module_name and not target.startswith(public_api.PACKAGE + "."):
        if cls:
            tries.append(f"{module_name}.{cls}.{target}")
        tries += _as_seen_from(module_name, target)
    for t in list(tries):
        if t.startswith(public_api.PACKAGE + "."):
            tries += _candidates(t)
    for t in tries:
        found = domain.find_obj(env, "", "", t, None, 0)
        if found:
            name, obj = found[0]
            return make_refnode(app.builder, node["refdoc"], obj.docname, obj.node_id, contnode, name)
    # a name unique among fabula's documented objects (Sphinx's search for ``.name``)
    if "." not in target:
        found = domain.find_obj(env, module_name, cls, target, node.get("reftype"), 1)
        if len(found) == 1:
            name, obj = found[0]
            return make_refnode(app.builder, node["refdoc"], obj.docname, obj.node_id, contnode, name)
    for t in tries:
        obj = _object(t)
        if obj is None:
            continue
        if _external(obj):
            return contnode  # no inventory offline: the name as text
        if t.startswith(public_api.PACKAGE + ".") and _private(t):
            return contnode  # a private object (an annotation's type): not documented, as text
        link = _standard_library_link(t, obj, contnode)
        if link is not None:
            return link
    return None


class SummaryDirective(Autosummary):
    """``autosummary`` whose rows read their summaries' references from the summarised
    object's own module and class, as its docstring does, not from the page's module."""

    def get_items(self, names):
        items = super().get_items(names)
        return [(n, sig, self._balanced(summary, real), real) for n, sig, summary, real in items]

    @staticmethod
    def _balanced(summary: str, real_name: str) -> str:
        """The summary, or where autosummary cut its first sentence inside a literal
        (``w_1 ... w_n``), the first sentence cut outside literals."""
        if summary.count("``") % 2 == 0:
            return summary
        doc = inspect.getdoc(_object(real_name)) or ""
        paragraph = " ".join(doc.split("\n\n")[0].split())
        inside = False
        for i, piece in enumerate(re.split(r"(``)", paragraph)):
            if piece == "``":
                inside = not inside
            elif not inside:
                end = re.search(r"\.(\s|$)", piece)
                if end:
                    cut = "".join(re.split(r"(``)", paragraph)[:i]) + piece[: end.start() + 1]
                    return cut
        return paragraph

    def get_table(self, items):
        context = self.env.ref_context
        saved = dict(context)
        result = None
        try:
            for item in items:
                real_name = item[3]
                obj = _object(real_name)
                module_name = real_name.rpartition(".")[0]
                context.pop("py:class", None)
                if inspect.isclass(obj) and _origin(obj).startswith(public_api.PACKAGE):
                    module_name = obj.__module__
                    context["py:class"] = obj.__qualname__
                elif inspect.ismodule(obj):
                    module_name = obj.__name__
                context["py:module"] = module_name
                table = super().get_table([item])
                if result is None:
                    result = table
                else:
                    body = next(iter(result[1].findall(nodes.tbody)))
                    body.extend(next(iter(table[1].findall(nodes.tbody))).children)
        finally:
            context.clear()
            context.update(saved)
        return result or []


# --------------------------------------------------------------------------------------------
# the registry of inference kinds


def _type_name(hint) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return f"{_type_name(args[0])}/..."
    if args and len(args) < len(typing.get_args(hint)):
        return _type_name(args[0])
    return getattr(hint, "__name__", str(hint))


def _default(f):
    return f.default if f.default is not MISSING else f.default_factory()


def _literal(value) -> str:
    if isinstance(value, tuple):
        return "``" + "/".join(str(v) for v in value) + "``"
    if value is None:
        return "``none``"
    if isinstance(value, bool):
        return f"``{str(value).lower()}``"
    return f"``{value}``"


class KindsDirective(SphinxDirective):
    """The registered inference kinds: one table of kinds, then one table of options per kind."""

    has_content = False

    def run(self):
        from fabula.inference import kinds as registry
        from fabula.inference import shipped  # noqa: F401  (fills the registry)
        from fabula.inference.spec import write

        for module in (registry, shipped):
            self.env.note_dependency(inspect.getsourcefile(module))
        kinds = list(registry.KINDS.values())
        rows = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 14 50 10 14",
            "",
            "   * - spec",
            "     - what it builds",
            "     - trains",
            "     - leading option",
        ]
        for kind in kinds:
            rows += [
                f"   * - :ref:`{kind.name} <kind-{kind.name}>`",
                f"     - {kind.summary}",
                f"     - {'yes' if kind.trains else 'no'}",
                f"     - {f'``{kind.leading}``' if kind.leading else ''}",
            ]
        rows.append("")
        for kind in kinds:
            title = f"``{kind.name}``"
            rows += [f".. _kind-{kind.name}:", "", title, "~" * len(title), ""]
            rows += [kind.summary[0].upper() + kind.summary[1:] + ".", ""]
            facts = []
            if not kind.trains:
                facts.append("does not train a story (run on a trained one)")
            if kind.own_objective:
                facts.append("brings its own loss (the setup's objective is ignored)")
            if kind.undirected:
                facts.append("trains undirected stories only")
            if kind.needs:
                facts.append(
                    "needs a story declaring "
                    + ", ".join(f":class:`~{c.__module__}.{c.__qualname__}`" for c in kind.needs)
                )
            if kind.reads:
                facts.append(f"trains stories that read {kind.reads}")
            if facts:
                rows += ["This kind " + "; ".join(facts) + ".", ""]
            options = fields(kind.options)
            if not options:
                rows += ["No options of its own.", ""]
                continue
            hints = typing.get_type_hints(kind.options)
            given = [f for f in options if _default(f) is not None]
            spelled = f"{kind.name}:" + ",".join(f"{f.name}={write(_default(f))}" for f in given)
            if given:
                try:
                    registry.parse(spelled)  # the spelled-out spec reads back
                except Exception as e:
                    logger.warning(
                        "the spec %r does not read back: %s", spelled, e, location=self.get_location()
                    )
            rows += [
                f"Options (:class:`~{kind.options.__module__}.{kind.options.__qualname__}`)"
                + (f"; a bare first value sets ``{kind.leading}``" if kind.leading else "")
                + (f". At their defaults: ``{spelled}``." if given else "."),
                "",
                ".. list-table::",
                "   :header-rows: 1",
                "   :widths: 14 10 16 20 40",
                "",
                "   * - option",
                "     - type",
                "     - default",
                "     - accepts",
                "     - meaning",
            ]
            for f in options:
                default = _default(f)
                meta = f.metadata
                accepts = ", ".join(f"``{c}``" for c in meta.get("choices") or []) or str(
                    meta.get("within") or ""
                )
                shown = _literal(default)
                if default is None and meta.get("unset"):
                    shown += f" ({meta['unset']})"
                rows += [
                    f"   * - ``{f.name}``" + (" (leading)" if f.name == kind.leading else ""),
                    f"     - {_type_name(hints[f.name])}",
                    f"     - {shown}",
                    f"     - {accepts}",
                    f"     - {meta.get('help', '')}",
                ]
            rows.append("")
        return self._parse(rows)

    def _parse(self, rows: list[str]):
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, StringList(rows, source="fabula-kinds"), container)
        return container.children


# --------------------------------------------------------------------------------------------
# the command's help


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its subparsers here only
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@contextlib.contextmanager
def _columns(width: int):
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


class CLIDirective(SphinxDirective):
    """``fabula --help`` and every subcommand's ``--help`` (each story's ``train`` flags too),
    one section each."""

    has_content = False

    def run(self):
        from fabula import cli

        self.env.note_dependency(inspect.getsourcefile(cli))
        top = cli.parser([])
        rows: list[str] = []
        with _columns(100):
            rows += self._section("fabula", top, "-")
            for name, sub in _subcommands(top).items():
                rows += self._section(f"fabula {name}", sub, "-")
                for story, story_parser in _subcommands(sub).items():
                    rows += self._section(f"fabula {name} {story}", story_parser, "~")
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, StringList(rows, source="fabula-cli"), container)
        return container.children

    @staticmethod
    def _section(title: str, parser: argparse.ArgumentParser, mark: str) -> list[str]:
        label = "cli-" + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        help_text = parser.format_help().rstrip()
        return [
            f".. _{label}:",
            "",
            f"``{title}``",
            mark * (len(title) + 4),
            "",
            ".. code-block:: text",
            "",
            *textwrap.indent(help_text, "   ", lambda line: True).splitlines(),
            "",
        ]


def setup(app):
    app.connect("builder-inited", generate)
    app.connect("missing-reference", resolve)
    app.add_directive("fabula-kinds", KindsDirective)
    app.add_directive("fabula-cli", CLIDirective)
    app.add_directive("fabula-summary", SummaryDirective)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
