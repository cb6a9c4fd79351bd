"""Imports run one way: data and models at the bottom, training and inference above them, the
command-line and service entry points on top, and no two modules import each other, not even
from inside a function (ARCHITECTURE: "From a model to recommendations")."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mmseqrec", "finetune", "pretrain")

#: Bottom to top; a module is in the layer of its longest matching prefix.
LAYERS = (
    ("data and features", ("mmseqrec.config", "mmseqrec.options", "mmseqrec.data", "mmseqrec.features", "mmseqrec.metrics",
                           "mmseqrec.interest", "mmseqrec.significance", "mmseqrec.savedmodel")),
    ("models", ("mmseqrec.models",)),
    ("training and inference", ("mmseqrec.checkpointing", "mmseqrec.training", "mmseqrec.runs", "mmseqrec.inference", "mmseqrec.added_items",
                                "mmseqrec.retrieval")),
    ("entry points", ("mmseqrec.cli", "mmseqrec.compare", "mmseqrec.hub", "mmseqrec.official_missrec", "mmseqrec.recommend",
                      "mmseqrec.serve", "mmseqrec.serve_check", "mmseqrec.bench", "finetune", "pretrain")),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    best = max(((len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
                if module == prefix or module.startswith(prefix + ".")), default=None)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[1]


def project_imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports, at any depth (function bodies too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            # ``from mmseqrec import hub`` imports the module mmseqrec.hub; the bare package
            # ``mmseqrec`` (its version, the lazy load()) is the public face, in no layer.
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != "mmseqrec":
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    modules = set(files)
    return {module: project_imports(path, modules) - {module} for module, path in files.items() if module != "mmseqrec"}


def test_imports_run_downwards_only():
    upward = [
        f"{importer} ({LAYERS[layer_of(importer)][0]}) imports {imported} ({LAYERS[layer_of(imported)][0]})"
        for importer, imported_set in import_graph().items()
        for imported in imported_set
        if layer_of(imported) > layer_of(importer)
    ]
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))


def test_no_two_modules_import_each_other():
    graph = import_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == 1:
                cycles.append(" -> ".join(stack[stack.index(imported):] + [imported]))
            elif imported not in state:
                visit(imported, stack + [imported])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checks_would_catch_a_cycle_and_an_upward_import(tmp_path):
    assert layer_of("mmseqrec.models.sasrec") < layer_of("mmseqrec.inference") < layer_of("mmseqrec.serve")
    (tmp_path / "a.py").write_text("def f():\n    from mmseqrec.serve import create_app\n")
    assert project_imports(tmp_path / "a.py", {"mmseqrec.serve", "mmseqrec"}) == {"mmseqrec.serve"}
