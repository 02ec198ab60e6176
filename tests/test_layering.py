"""The architecture in DESIGN.md, enforced: imports run one way, down the layers; diffusers only in backend.

Every import counts, at module level, inside a function, or under TYPE_CHECKING: a late
import still ties the two packages together.
"""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "patchkit"

# Lowest first. A package may import only from layers below its own (and from itself).
LAYERS: list[set[str]] = [
    {"__init__", "errors", "architectures"},  # the version string, the exception hierarchy, config data
    {"core"},  # pure work on tensors, keys, manifests, worlds
    {"io"},  # files: safetensors, spans, atomic writes, signatures
    {"store"},  # local state: trust store, registry, XDG locations
    {"models"},  # model references and their weights, without torch
    {"backend"},  # the only importer of diffusers and transformers
    {"training", "evaluation"},  # the Forget-Me-Not loop; judges and the M-Score's parts
    {"testbed"},  # one world: its rendering, tokenizer, build and shipped assets
    {"services"},  # one function per use case
    {"cli"},  # parse, call one service, render
    {"__main__"},
]
RANK = {name: rank for rank, layer in enumerate(LAYERS) for name in layer}


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _modules(folder: str = "") -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def _package_edges(root: Path = PACKAGE) -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> where, for every import between two packages."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        source = relative.parts[0] if len(relative.parts) > 1 else relative.stem
        for line, module in _imports(path):
            if module == "patchkit" or module.startswith("patchkit."):
                target = _package_of(module)
                if target != source:
                    edges[(source, target)].append(f"{relative}:{line}")
    return edges


def _cycle(edges: dict[tuple[str, str], list[str]]) -> list[str] | None:
    """One cycle in the package graph, as the packages along it, or None."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    state: dict[str, int] = {}  # 1 on the current path, 2 finished

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt] if nxt in path else [*path, nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_every_package_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__" and any(p.rglob("*.py"))}
    packages |= {p.stem for p in PACKAGE.glob("*.py")}
    assert packages <= set(RANK), f"give {sorted(packages - set(RANK))} a layer in LAYERS"


def test_no_import_cycle_between_packages():
    cycle = _cycle(_package_edges())
    assert cycle is None, f"import cycle between packages: {' -> '.join(cycle or [])}"


def test_imports_run_down_the_layers():
    against = [
        f"{where}: {a} imports {b}"
        for (a, b), places in _package_edges().items()
        for where in places
        if RANK[b] >= RANK[a]
    ]
    assert not against, "imports against the drawn direction:\n" + "\n".join(against)


def test_the_checks_catch_a_cycle_and_an_upward_import(tmp_path):
    """The two tests above can fail: a tree with core -> services -> core is refused by both."""
    (tmp_path / "core").mkdir()
    (tmp_path / "services").mkdir()
    (tmp_path / "core" / "a.py").write_text("from patchkit.services.b import thing\n")
    (tmp_path / "services" / "b.py").write_text("from patchkit.core.a import other\n")
    edges = _package_edges(tmp_path)
    assert _cycle(edges) in (["core", "services", "core"], ["services", "core", "services"])
    assert [(a, b) for a, b in edges if RANK[b] >= RANK[a]] == [("core", "services")]


def test_diffusers_and_transformers_only_in_backend():
    for path in _modules():
        if "backend" in path.relative_to(PACKAGE).parts:
            continue
        heavy = {n for _, n in _imports(path) if n.split(".")[0] in ("diffusers", "transformers", "peft")}
        assert not heavy, f"{path.relative_to(PACKAGE)} imports {heavy}; go through patchkit.backend"


@pytest.mark.parametrize("folder", ["core", "io", "store", "models"])
def test_lower_layers_touch_no_console(folder):
    for path in _modules(folder):
        bad = {n for _, n in _imports(path) if n.split(".")[0] in ("rich", "typer")}
        assert not bad, f"{folder}/{path.name} imports {bad}"


def test_the_model_layer_needs_no_torch_at_import():
    """apply, stack and info run without torch: patchkit/models imports it only inside functions."""
    for path in _modules("models"):
        top = [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in top if isinstance(n, ast.ImportFrom) and n.module}
        assert not {n for n in names if n.split(".")[0] in ("torch", "safetensors")}, path.name
