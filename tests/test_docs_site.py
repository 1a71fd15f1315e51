"""The documentation site (``docs/``): it builds with warnings as errors and every
cross-reference resolved, its math is MathML that a browser renders, its links lead to pages
that exist; and every public name the API reference lists has a docstring.

The site is built as the documentation says::

    pip install -e ".[docs]"
    python -m sphinx -W -n --keep-going -b html docs docs/_build/html

(here into a temporary folder). Public modules and names are defined once, in
``docs/_ext/public_api.py``, which the build reads too.
"""

from __future__ import annotations

import html.parser
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BUILD_PACKAGES = ("sphinx", "furo", "myst_parser", "latex2mathml")
BROWSERS = ("chromium", "chromium-browser")
# the two pages opened in the browser: the landing page, and an API page with math
PAGES = ("index.html", "_generated/api/fabula.inference.refinement.html")
RAW_LATEX = re.compile(r"\\(frac|mathcal|operatorname|tfrac|lVert|big|sum|log|mathrm)\b|:math:")
NOT_FOUND = re.compile(r"page not found|file not found|err_file_not_found|couldn.t be accessed", re.I)


def public_api():
    """``docs/_ext/public_api.py``, the definition of public modules and names."""
    spec = importlib.util.spec_from_file_location("public_api", DOCS / "_ext" / "public_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_public_name_has_a_docstring():
    api = public_api()
    missing = []
    for module_name in api.public_modules():
        module = importlib.import_module(module_name)
        if not (module.__doc__ or "").strip():
            missing.append(f"{module_name} (module)")
        for name in api.public_names(module_name):
            if not api.docstring(module_name, name):
                missing.append(f"{module_name}.{name}")
    assert not missing, (
        f"{len(missing)} public names without a docstring (a constant's is a '#:' comment): "
        + ", ".join(missing)
    )


class _Page(html.parser.HTMLParser):
    """The visible text, the links and the MathML elements of an HTML page."""

    def __init__(self):
        super().__init__()
        self.text, self.links, self.math, self.errors = [], [], 0, 0
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "style"):
            self._hidden += 1
        if tag == "math":
            self.math += 1
        if "math-error" in (attrs.get("class") or ""):
            self.errors += 1
        for key in ("href", "src"):
            if attrs.get(key):
                self.links.append(attrs[key])

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._hidden -= 1

    def handle_data(self, data):
        if not self._hidden:
            self.text.append(data)


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    absent = [p for p in BUILD_PACKAGES if importlib.util.find_spec(p) is None]
    if absent:
        pytest.skip(f"the docs' packages are not installed ({', '.join(absent)}): pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("docs") / "html"
    command = [sys.executable, "-m", "sphinx", "-W", "-n", "--keep-going", "-b", "html", "docs", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    return out


@pytest.mark.thorough
def test_the_site_builds_with_every_page(site):
    from sphinx.util.inventory import InventoryFile

    for page in ("index", "tutorial", "kinds", "cli", "api", "gallery", "scaling"):
        assert (site / f"{page}.html").is_file(), page
    with (site / "objects.inv").open("rb") as f:
        inventory = InventoryFile.load(f, "", lambda base, uri: uri)
    documented = {name for objects in inventory.values() for name in objects}
    api = public_api()
    absent = []
    for module_name in api.public_modules():
        assert (site / "_generated" / "api" / f"{module_name}.html").is_file(), module_name
        absent += [
            f"{module_name}.{n}"
            for n in api.public_names(module_name)
            if api.canonical(f"{module_name}.{n}") not in documented
        ]
    assert not absent, f"public names the API reference does not document: {absent}"
    for page in site.rglob("*.html"):
        text = " ".join(_parse(page.read_text(encoding="utf-8")).text)
        assert not NOT_FOUND.search(text), f"{page.relative_to(site)} says a page was not found"


@pytest.fixture
def browser() -> str:
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        pytest.skip(f"no headless browser ({' or '.join(BROWSERS)}; Debian: apt-get install chromium)")
    return found


@pytest.mark.thorough
def test_pages_render_in_a_browser(browser, site):  # the browser first: without one, no build
    for name in PAGES:
        path = site / name
        done = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
            env={
                **os.environ,
                "HOME": str(site.parent),
            },  # the browser's profile stays in the temporary folder
        )
        assert done.returncode == 0 and "<html" in done.stdout, f"{browser} on {name}: {done.stderr[-2000:]}"
        page = _parse(done.stdout)
        text = " ".join(page.text)
        assert page.math > 0, f"{name}: no MathML <math> element"
        assert page.errors == 0, f"{name}: {page.errors} formulas did not convert"
        raw = sorted({m.group(0) for m in RAW_LATEX.finditer(text)})
        assert not raw, f"{name}: raw LaTeX left in the text: {raw}"
        assert not NOT_FOUND.search(text), f"{name} says the page was not found"
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme and parts.scheme != "file" or link.startswith("//"):
                continue  # not local
            target = (
                Path(unquote(parts.path)) if parts.scheme == "file" else (path.parent / unquote(parts.path))
            )
            if not parts.path:
                target = path
            assert target.resolve().is_file(), f"{name}: the link {link!r} leads to no file"
            if parts.fragment and target.suffix == ".html":
                anchors = re.findall(r'\sid="([^"]+)"', target.read_text(encoding="utf-8"))
                assert unquote(parts.fragment) in anchors, f"{name}: the link {link!r} leads to no anchor"
