"""The package's shape, checked from the structure of its imports (not by eye): layers that only import downwards,
no import circle, method folders that do not reach into each other, modules of a readable length.

Layers: foundation -> data/ -> llm/ -> methods/ -> evaluation/ -> notebook/ -> the CLI (workbench/__init__.py).
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "workbench"
FOUNDATION = ("quiet", "config", "assets", "outputs", "process", "compute", "metrics", "results", "recommender")
LAYERS = [{f"workbench.{m}" for m in FOUNDATION}, "workbench.data", "workbench.llm", "workbench.methods",
          "workbench.evaluation", "workbench.notebook", {"workbench.distributed", "workbench.gpucheck", "workbench.__main__", "workbench"}]
LONG = 300  # lines; a longer module says why in its docstring ("Longer than ...")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """The workbench modules a module imports (anywhere in it, function-level imports included)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("workbench")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            if not base.startswith("workbench"):
                continue
            for alias in node.names:  # `from pkg import module` imports the module
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports(name) for name in MODULES}


def layer(name: str) -> int:
    for i, members in enumerate(LAYERS):
        if (isinstance(members, set) and name in members) or (isinstance(members, str) and
                                                              (name == members or name.startswith(members + "."))):
            return i
    raise AssertionError(f"{name} belongs to no layer: add it to LAYERS")


def test_every_module_belongs_to_a_layer_and_imports_only_its_own_or_lower_layers():
    upward = [f"{a} -> {b}" for a, deps in GRAPH.items() for b in deps if layer(b) > layer(a)]
    assert upward == []


def test_there_is_no_import_circle():
    """Tarjan's strongly connected components of the import graph: every one a single module."""
    index, low, stack, on_stack, circles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert circles == []


def folder_of(name: str) -> str | None:
    """The method folder a module is in (workbench.methods.<folder>.*), or None."""
    parts = name.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "methods" and (PACKAGE / "methods" / parts[2]).is_dir() else None


def test_method_folders_reach_only_the_baselines_and_the_pipeline_and_the_pipeline_no_method():
    """A method's code stays in its folder: it may use the conventional baselines (domain models, ID tables) and the
    pipeline (other saved runs), never another method; the pipeline and the shared core know no method."""
    crossing = []
    for a, deps in GRAPH.items():
        for b in deps:
            fa, fb = folder_of(a), folder_of(b)
            if fb and fa != fb and not (fa and fb == "baselines") and a != "workbench.methods":
                crossing.append(f"{a} -> {b}")
    assert crossing == []


def test_the_method_registry_is_filled_without_importing_any_model_code():
    """Declaring every method (import workbench) stays light: no torch, transformers or method class."""
    import subprocess
    import sys
    code = ("import sys, workbench; from workbench import config, recommender; "
            "print(len(recommender.REGISTRY), 'MKV_ARMS' in config.PARAMS, "
            "any(m in sys.modules for m in ('torch', 'transformers', 'workbench.methods.mkv.method')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["8", "True", "False"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_module_is_short_or_says_why_not(name):
    path = MODULES[name]
    lines = len(path.read_text().splitlines())
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert doc.strip(), f"{name} has no docstring"
    assert lines <= LONG or "Longer than" in doc, f"{name}: {lines} lines and no reason in its docstring"


def test_names_explain_themselves_no_lookalike_modules_and_no_short_aliases():
    """runner/running/runtime, engine beside rank, models/prompts grab-bags are gone; imports keep their names
    (numpy, pandas, torch.nn and torch.nn.functional keep their customary short names)."""
    leaves = {name.rpartition(".")[2] for name in MODULES}
    assert not leaves & {"runner", "running", "runtime", "engine", "rank", "base", "train", "mutual_learning"}
    allowed = {"np", "pd", "nn", "F", "tqdm"}
    short = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                short += [f"{name}: {a.name} as {a.asname}" for a in node.names
                          if a.asname and len(a.asname) <= 2 and a.asname not in allowed]
    assert short == []


def test_the_contract_declares_everything_the_pipeline_calls():
    import inspect
    from workbench.recommender import Recommender
    assert "callbacks" in inspect.signature(Recommender.fit).parameters
    assert "scorer" in inspect.signature(Recommender.rank).parameters
    for member in ("run_key", "eval_view", "diagnose", "report", "save", "load"):
        assert callable(getattr(Recommender, member))
