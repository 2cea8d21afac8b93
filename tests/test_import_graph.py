"""The package's import graph: layers only import downwards, and nothing imports in a cycle.

Every `import` / `from ... import` of a tfmmsearch module is read from the source with `ast`,
function-level imports included (they still make one module depend on another). Layers,
bottom to top:
  0  contract, config, logs, progress    facts and plumbing every layer shares
  1  data, hub                            catalogs, TF-Hub modules
  2  model                                the model, its building and restoring
  3  training, evaluation, exporting, serving   peers that use the model, never each other's
                                              internals in a cycle (training imports none)
  4  cli, demo                            entrypoints
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tfmmsearch"

LAYERS = {"contract": 0, "config": 0, "logs": 0, "progress": 0,
          "data": 1, "hub": 1, "model": 2,
          "training": 3, "evaluation": 3, "exporting": 3, "serving": 3,
          "cli": 4, "demo": 4}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, known: set[str], this: str | None = None) -> set[str]:
    """tfmmsearch modules that `path` (module `this`) imports anywhere in its body."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    this = this or module_name(path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = this.split(".")[:len(this.split(".")) - node.level + (path.name == "__init__.py")]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in known and name != this}
    return found


def package_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, known) for p in paths}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None  # the package itself: no layer


def test_every_subpackage_and_top_level_module_has_a_layer():
    unplaced = sorted({module.split(".")[1] for module in package_graph() if "." in module}
                      - set(LAYERS))
    assert not unplaced, f"give these a layer in tests/test_import_graph.py: {unplaced}"


def test_no_module_imports_a_higher_layer():
    upward = []
    for module, imports in package_graph().items():
        for target in imports:
            source_layer, target_layer = layer_of(module), layer_of(target)
            if source_layer is not None and target_layer is not None and target_layer > source_layer:
                upward.append(f"{module} (layer {source_layer}) imports {target} (layer {target_layer})")
    assert not upward, "\n".join(sorted(upward))


def test_training_is_imported_only_by_entrypoints():
    users = sorted(module for module, imports in package_graph().items()
                   if any(t.startswith("tfmmsearch.training") for t in imports)
                   and not module.startswith("tfmmsearch.training")
                   and layer_of(module) != LAYERS["cli"])
    assert not users, f"evaluation/exporting/serving must not need training: {users}"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a path, or None."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles_between_modules_or_subpackages():
    graph = package_graph()
    cycle = _cycle({m: {t for t in ts if t != "tfmmsearch"} for m, ts in graph.items()})
    assert cycle is None, "module import cycle: " + " -> ".join(cycle)
    groups: dict[str, set[str]] = {}
    for module, imports in graph.items():
        if "." not in module:
            continue
        source = module.split(".")[1]
        groups.setdefault(source, set()).update(
            t.split(".")[1] for t in imports if "." in t and t.split(".")[1] != source)
    cycle = _cycle(groups)
    assert cycle is None, "subpackage import cycle: " + " -> ".join(cycle)


def test_the_checker_sees_function_level_imports_and_cycles(tmp_path):
    # The checker itself can fail: a function-level import is found, and a cycle is reported.
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from tfmmsearch.training import train\n")
    known = {"tfmmsearch.training", "tfmmsearch.training.train"}
    assert "tfmmsearch.training.train" in imported_modules(source, known, this="tfmmsearch.mod")
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
