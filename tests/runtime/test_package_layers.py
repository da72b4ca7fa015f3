"""The import rule between the packages (docs/ARCHITECTURE.md, "Layers"), checked on every module's source:
imports at the top and inside functions alike (a lazy import is still a dependency).

    ple_model              -> nothing of ours (PyTorch only)
    ple_runtime            -> no domain package (the shared layer: config, errors, Delta log, snapshots, Spark)
    model_registry         -> ple_model, ple_runtime (read by training, evaluation, publishing, ple maintain)
    training, evaluation   -> never each other; through ple_runtime / model_registry only
    publishing             -> evaluation (scoring), model_registry; not training
    orchestration          -> the stages' packages; not jobs (but see ALLOWED)
    jobs                   -> anything (argv -> config -> run -> exit code)
    airflow_dags           -> none of our packages (the DAGs call the `ple` CLI)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
OURS = {"feature_eng", "datagen", "ple_model", "ple_runtime", "model_registry", "training", "evaluation",
        "publishing", "orchestration", "jobs", "airflow_dags"}
DOMAIN = OURS - {"ple_runtime"}

# package -> packages of ours it must not import
FORBIDDEN = {
    "ple_model": OURS - {"ple_model"},
    "ple_runtime": DOMAIN,
    "model_registry": OURS - {"model_registry", "ple_model", "ple_runtime"},
    "training": {"evaluation", "publishing", "orchestration", "jobs", "airflow_dags"},
    "evaluation": {"training", "publishing", "orchestration", "jobs", "airflow_dags"},
    "publishing": {"training", "orchestration", "jobs", "airflow_dags"},
    "orchestration": {"jobs", "airflow_dags"},
    "airflow_dags": OURS - {"airflow_dags"},
}

# (importing module, imported package) pairs that break the rule today, each with why and who removes it.
ALLOWED = {
    # The extract side is being restructured (issue 23): ple_runtime/raw_logs.py and tables.py still use
    # feature_eng's schema and transforms. The lead removes these two after merging that work.
    ("ple_runtime.raw_logs", "feature_eng"),
    ("ple_runtime.tables", "feature_eng"),
    # `ple pipeline` runs generate and extract through their jobs' typed configs and run functions, which
    # live in jobs/ until the extract side gives them packages of their own (then: import those).
    ("orchestration.pipeline", "jobs"),
}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for package in sorted(FORBIDDEN):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            found.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return found


def _imports(path: Path) -> list[tuple[str, int]]:
    """Top-level names of every absolute import in the file (relative imports stay in the package)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(alias.name.split(".")[0], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append((node.module.split(".")[0], node.lineno))
    return names


def _top_level(module: str) -> str:
    return module.split(".")[0]


def test_every_package_imports_only_what_its_layer_allows():
    broken = []
    for module, path in _modules():
        forbidden = FORBIDDEN[_top_level(module)]
        for imported, line in _imports(path):
            if imported in forbidden and (module, imported) not in ALLOWED:
                broken.append(f"{module} imports {imported} ({path.relative_to(REPO_ROOT)}:{line})")
    assert not broken, "imports against the layer rule (tests/runtime/test_package_layers.py):\n" + "\n".join(broken)


@pytest.mark.parametrize("module, package", sorted(ALLOWED))
def test_each_allowance_is_still_needed(module, package):
    """An allowance whose import is gone must go too, so the list only ever shrinks."""
    path = REPO_ROOT / (module.replace(".", "/") + ".py")
    assert package in {name for name, _ in _imports(path)}, f"{module} no longer imports {package}: drop it from ALLOWED"


def test_the_rule_sees_imports_inside_functions(tmp_path):
    """The checker itself: an import inside a function counts (a lazy import is still a dependency)."""
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from evaluation.scoring import score_model\n    import training.plan\n")
    assert [name for name, _ in _imports(source)] == ["evaluation", "training"]
