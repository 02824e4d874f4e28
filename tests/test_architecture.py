"""The room map of DESIGN.md holds: every import (function-level ones included) goes down a floor, never up,
and no module imports itself back through others."""

import ast
from pathlib import Path

import deepinv_meta

PACKAGE = Path(deepinv_meta.__file__).parent

# lowest floor first; a room may import its own modules and the rooms of lower floors only
FLOORS = [
    {"io", "progress", "figures"},
    {"physics", "dynamics", "losses"},
    {"data", "bilevel", "weights"},
    {"tasks", "models"},
    {"baselines", "toy", "pretrained"},
    {"commands", "benchmarks"},
    {"demo", "reconstruct", "campaign"},
    {"cli"},
    {""},  # the package itself: deepinv_meta/__init__.py
]
UPWARD_ALLOWED = {
    ("benchmarks.throughput", ""),  # its cases run against any commit of the package, through its public API
    ("toy", "benchmarks.theory"), ("models.bayes", "benchmarks.theory"),  # deprecated aliases of moved modules
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The package modules ``path`` imports, wherever the import statement sits."""
    name, is_package = module_name(path), path.name == "__init__.py"
    here = name.split(".") if name else []
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)] + ([node.module] if node.module else [])
            elif (node.module or "").split(".")[0] == "deepinv_meta":
                base = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:
                full = ".".join(base + [alias.name])
                found.add(full if full in MODULES else ".".join(base))
        elif isinstance(node, ast.Import):
            found.update(".".join(a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == "deepinv_meta")
    return {m for m in found if m in MODULES and m != name}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: imports(path) for name, path in MODULES.items()}


def floor(module: str) -> int:
    room = module.split(".")[0]
    return next(i for i, rooms in enumerate(FLOORS) if room in rooms)


def test_every_room_is_on_a_floor():
    assert {m.split(".")[0] for m in MODULES} - set().union(*FLOORS) == set()  # a new room needs its floor


def test_no_import_goes_up_a_floor():
    upward = [(m, d) for m, deps in GRAPH.items() for d in deps
              if m.split(".")[0] != d.split(".")[0] and floor(d) >= floor(m) and (m, d) not in UPWARD_ALLOWED]
    assert upward == []


def test_no_module_imports_itself_back():
    state = {}

    def visit(module, path):
        state[module] = "open"
        for dep in GRAPH[module]:
            if state.get(dep) == "open":
                raise AssertionError(f"import cycle: {' -> '.join(path + [module, dep])}")
            if dep not in state:
                visit(dep, path + [module])
        state[module] = "done"

    for module in GRAPH:
        if module not in state:
            visit(module, [])


def test_moved_modules_keep_their_old_names_with_a_deprecation_warning():
    import importlib
    import sys

    import pytest

    from deepinv_meta.benchmarks import theory

    for old, name in (("deepinv_meta.toy", "toy_task"), ("deepinv_meta.models.bayes", "gaussian_bayes_estimator")):
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match="deepinv_meta.benchmarks.theory"):
            module = importlib.import_module(old)
        assert getattr(module, name) is getattr(theory, name)
