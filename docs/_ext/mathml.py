"""Math rendered to MathML when the site is built, so pages need no script and no network.

Registers the HTML math renderer ``mathml`` (select it with ``html_math_renderer = "mathml"``):
every ``:math:`` role and ``.. math::`` block (and MyST's ``$...$`` and ``{math}``) is converted
by `latex2mathml <https://pypi.org/project/latex2mathml/>`_ into ``<math>`` elements, which
browsers render natively. A formula the converter refuses, or converts while leaving a LaTeX
command (``\\foo``) as text or an alignment mark (``&``) unescaped, is a warning naming the formula and
its location, so a build with ``-W`` fails instead of showing raw LaTeX.

As in Sphinx's MathJax renderer, a ``.. math::`` block holding several equations separated by
blank lines shows each on its own, and an equation with ``\\\\`` line breaks is set as a
``split`` environment (``&`` marks the alignment column).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree

from docutils import nodes
from latex2mathml.converter import convert
from sphinx.locale import _
from sphinx.util import logging
from sphinx.util.math import get_node_equation_number

logger = logging.getLogger(__name__)

_MATHML = "{http://www.w3.org/1998/Math/MathML}"
_LEFTOVER = re.compile(r"\\[A-Za-z]+")


class MathConversionError(ValueError):
    """A formula that does not convert to MathML cleanly."""


def to_mathml(latex: str, display: str = "inline") -> str:
    """``latex`` as a ``<math>`` element (``display`` is ``"inline"`` or ``"block"``).

    :raises MathConversionError: where the converter fails or leaves LaTeX behind as text.
    """
    try:
        mathml = convert(latex.strip(), display=display)
    except Exception as e:  # the converter raises its own exceptions and plain ones alike
        raise MathConversionError(f"{type(e).__name__}: {e}") from e
    try:
        tree = ElementTree.fromstring(mathml)
    except ElementTree.ParseError as e:  # an unescaped & (an alignment mark) or < in the output
        raise MathConversionError(f"the converter wrote ill-formed MathML ({e})") from e
    for element in tree.iter():
        text = element.text or ""
        if element.tag.startswith(_MATHML) and _LEFTOVER.search(text):
            raise MathConversionError(f"{text!r} was left unconverted")
    return mathml


def _convert(translator, node, latex: str, display: str) -> str:
    try:
        return to_mathml(latex, display)
    except MathConversionError as e:
        logger.warning(
            "math does not convert to MathML: %s: %r",
            e,
            latex,
            location=node,
            type="mathml",
            subtype="convert",
        )
        return f'<code class="math-error">{translator.encode(latex)}</code>'


def visit_math(self, node: nodes.math) -> None:
    self.body.append(self.starttag(node, "span", "", CLASS="math notranslate"))
    self.body.append(_convert(self, node, node.astext(), "inline"))
    self.body.append("</span>")
    raise nodes.SkipNode


def _equation(latex: str) -> str:
    if r"\\" in latex and r"\begin" not in latex:
        return r"\begin{split}" + latex + r"\end{split}"
    return latex


def visit_displaymath(self, node: nodes.math_block) -> None:
    self.body.append(self.starttag(node, "div", CLASS="math notranslate"))
    if node["number"]:
        number = get_node_equation_number(self, node)
        self.body.append(f'<span class="eqno">({number})')
        self.add_permalink_ref(node, _("Link to this equation"))
        self.body.append("</span>")
    if node.get("no-wrap", node.get("nowrap", False)):
        parts = [node.astext()]
    else:
        parts = [_equation(part) for part in node.astext().split("\n\n") if part.strip()]
    for part in parts:
        self.body.append(_convert(self, node, part, "block"))
    self.body.append("</div>\n")
    raise nodes.SkipNode


def setup(app):
    app.add_html_math_renderer("mathml", (visit_math, None), (visit_displaymath, None))
    app.add_css_file("mathml.css")
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
