"""The import rule between the packages (docs/ARCHITECTURE.md, "Layers"), checked on every module's source:
imports at the top and inside functions alike (a lazy import is still a dependency).

    ple_model              -> nothing of ours (PyTorch only)
    ple_runtime            -> no domain package (the shared layer: config, errors, Delta log, snapshots, Spark)
    feature_eng            -> ple_runtime.errors and .local_frames only (pure DataFrame transforms: no paths, writes)
    datagen                -> feature_eng, ple_runtime (the raw-log generator and the generate stage)
    model_registry         -> ple_model, ple_runtime (read by training, evaluation, publishing, ple maintain)
    extraction             -> feature_eng, ple_runtime (the extract stage)
    training, evaluation   -> never each other; through ple_runtime / model_registry only
    publishing             -> evaluation (scoring), model_registry; not training
    maintenance            -> model_registry (the versions models pin), ple_runtime
    orchestration          -> the stages' packages; not jobs
    jobs                   -> anything (argv -> config -> run -> exit code)
    airflow_dags           -> none of our packages (the DAGs call the `ple` CLI)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
OURS = ({path.parent.name for path in REPO_ROOT.glob("*/__init__.py")} - {"tests"}) | {"airflow_dags"}

# package -> the packages of ours it may import (itself always)
MAY_IMPORT = {
    "ple_model": set(),
    "ple_runtime": set(),
    "feature_eng": {"ple_runtime"},
    "datagen": {"feature_eng", "ple_runtime"},
    "model_registry": {"ple_model", "ple_runtime"},
    "extraction": {"feature_eng", "ple_runtime"},
    "training": {"ple_model", "ple_runtime", "model_registry"},
    "evaluation": {"ple_model", "ple_runtime", "model_registry"},
    "publishing": {"ple_model", "ple_runtime", "model_registry", "evaluation"},
    "maintenance": {"ple_runtime", "model_registry"},
    "orchestration": OURS - {"jobs", "airflow_dags"},
    "airflow_dags": set(),
}
FORBIDDEN = {package: OURS - allowed - {package} for package, allowed in MAY_IMPORT.items()}
# Finer than packages: feature_eng's errors derive from the one base class, its empty tables are the JVM's
# local relations, and nothing else of the runtime.
MAY_IMPORT_MODULES = {"feature_eng": {"ple_runtime": ("ple_runtime.errors", "ple_runtime.local_frames")}}

def test_every_package_of_ours_has_a_rule():
    """A new package must say what it may import, or nothing would check it."""
    assert OURS - {"jobs"} == set(MAY_IMPORT), "add the new package to MAY_IMPORT"


def _modules() -> list[tuple[str, Path]]:
    found = []
    for package in sorted(FORBIDDEN):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            found.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return found


def _imported_modules(path: Path) -> list[tuple[str, int]]:
    """Every absolute import in the file, as the module it names (relative imports stay in the package)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append((node.module, node.lineno))
    return names


def _imports(path: Path) -> list[tuple[str, int]]:
    """Top-level package of every absolute import in the file."""
    return [(name.split(".")[0], line) for name, line in _imported_modules(path)]


def _top_level(module: str) -> str:
    return module.split(".")[0]


def test_every_package_imports_only_what_its_layer_allows():
    broken = []
    for module, path in _modules():
        forbidden = FORBIDDEN[_top_level(module)]
        for imported, line in _imports(path):
            if imported in forbidden:
                broken.append(f"{module} imports {imported} ({path.relative_to(REPO_ROOT)}:{line})")
    assert not broken, "imports against the layer rule (tests/runtime/test_package_layers.py):\n" + "\n".join(broken)


@pytest.mark.parametrize("package", sorted(MAY_IMPORT_MODULES))
def test_modules_a_package_may_import_of_an_allowed_package(package):
    rules, broken = MAY_IMPORT_MODULES[package], []
    for module, path in _modules():
        for imported, line in _imported_modules(path) if _top_level(module) == package else []:
            allowed = rules.get(_top_level(imported))
            if allowed is not None and not any(imported == a or imported.startswith(a + ".") for a in allowed):
                broken.append(f"{module} imports {imported} ({path.relative_to(REPO_ROOT)}:{line}); "
                              f"of {_top_level(imported)} it may import only {list(allowed)}")
    assert not broken, "\n".join(broken)


def test_the_rule_sees_imports_inside_functions(tmp_path):
    """The checker itself: an import inside a function counts (a lazy import is still a dependency)."""
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from evaluation.scoring import score_model\n    import training.plan\n")
    assert [name for name, _ in _imports(source)] == ["evaluation", "training"]
