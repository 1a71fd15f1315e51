"""The library never imports the run layer, its flags or the command line: a user composes the
library in Python, and the run layer is one user of it."""

import subprocess
import sys

LIBRARY = [
    "fabula.data",
    "fabula.nn",
    "fabula.models",
    "fabula.guides",
    "fabula.inference",
    "fabula.evaluation",
    "fabula.distributions",
    "fabula.backends",
    "fabula.diagnostics",
]
RUN_LAYER = ("fabula.run", "fabula.cli", "fabula.cgmh")


def test_the_library_imports_neither_the_run_layer_nor_the_command():
    code = (
        f"import sys, {', '.join(LIBRARY)}\n"
        f"print(' '.join(sorted(m for m in sys.modules if m.startswith({RUN_LAYER!r}))))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "", f"the library imports {found.stdout.strip()}"


def test_the_check_sees_an_import_of_the_run_layer():
    code = (
        f"import sys, fabula.run.flags\nprint(sorted(m for m in sys.modules if m.startswith({RUN_LAYER!r})))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "fabula.run.flags" in found.stdout
