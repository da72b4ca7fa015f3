"""The layers import downwards only: the runtime layer (ple_runtime) imports no domain or stage
package, and feature_eng (pure DataFrame transforms) reaches neither a stage nor the runtime
layer beyond its dependency-free error base (ple_runtime.errors). Read statically: nothing
is imported, so a violation is reported even where the import would only run later."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests"}


def _imports(package: str) -> list[tuple[str, str]]:
    """(file:line, imported module) of every project import in `package`, lazy ones included."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            found += [(f"{path.relative_to(ROOT)}:{node.lineno}", name) for name in names
                      if name.split(".")[0] in PROJECT]
    return found


def test_the_project_packages_are_found():
    assert {"ple_runtime", "feature_eng", "extraction", "jobs"} <= PROJECT


@pytest.mark.parametrize("package, allowed", [
    ("ple_runtime", ("ple_runtime",)),
    ("feature_eng", ("feature_eng", "ple_runtime.errors")),
])
def test_a_layer_imports_only_what_is_below_it(package, allowed):
    offending = [f"{where}: {name}" for where, name in _imports(package)
                 if not any(name == a or name.startswith(a + ".") for a in allowed)]
    assert not offending, f"{package} may import only {allowed}; found:\n" + "\n".join(offending)
