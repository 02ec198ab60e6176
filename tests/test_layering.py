"""The architecture in DESIGN.md, enforced: cli -> services -> core; diffusers only in backend."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "patchkit"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules(folder: str = "") -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def test_diffusers_and_transformers_only_in_backend():
    for path in _modules():
        if "backend" in path.relative_to(PACKAGE).parts:
            continue
        heavy = {n for n in _imports(path) if n.split(".")[0] in ("diffusers", "transformers", "peft")}
        assert not heavy, f"{path.relative_to(PACKAGE)} imports {heavy}; go through patchkit.backend"


def test_core_touches_no_console_cli_or_services():
    for path in _modules("core"):
        bad = {
            n
            for n in _imports(path)
            if n.startswith(("rich", "typer", "patchkit.cli", "patchkit.services", "patchkit.io"))
        }
        assert not bad, f"core/{path.name} imports {bad}"


def test_services_do_not_import_the_cli():
    for path in _modules("services"):
        bad = {n for n in _imports(path) if n.startswith(("patchkit.cli", "typer", "rich"))}
        assert not bad, f"services/{path.name} imports {bad}"
