"""The encoders package has no import cycle, and each of its modules imports on its own.

The factory used to live in ``base.py`` and import the implementations, which import
``base.py``: a cycle hidden behind a function-local import. The AST check below counts
function-local imports too, so such a cycle cannot come back unnoticed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import napari_tpm.encoders as encoders_pkg

PKG = "napari_tpm.encoders"
FOLDER = Path(encoders_pkg.__file__).parent
MODULES = sorted(p.stem for p in FOLDER.glob("*.py") if p.stem != "__init__")


def _sibling_imports(module: str) -> set[str]:
    """Sibling modules that ``module`` imports anywhere in its source (top level or local)."""
    tree = ast.parse((FOLDER / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(PKG + "."):
                found.add(node.module[len(PKG) + 1 :].split(".")[0])
            elif node.module == PKG:  # from napari_tpm.encoders import x: the whole package
                found.add("__init__")
            elif node.level == 1:  # relative: from .base import Encoder
                found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PKG + "."):
                    found.add(alias.name[len(PKG) + 1 :].split(".")[0])
    return found - {module}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_encoder_modules_form_no_import_cycle() -> None:
    graph = {m: _sibling_imports(m) for m in MODULES}
    assert "__init__" not in set().union(*graph.values()), "a submodule imports the package face"
    assert _find_cycle(graph) is None, f"import cycle: {' -> '.join(_find_cycle(graph))}"
    # the contract depends on no implementation; the registry sits on top of them all
    assert graph["base"] == set()
    assert {"base", "filterbank", "resnet", "hybrid"} <= graph["registry"]


def test_package_face_reexports_the_registry() -> None:
    from napari_tpm.encoders import ENCODER_NAMES, base, build_encoder, registry

    assert build_encoder is registry.build_encoder
    assert ENCODER_NAMES == registry.ENCODER_NAMES
    assert not hasattr(base, "build_encoder")


@pytest.mark.slow
@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone(module: str) -> None:
    """A fresh interpreter imports the module first, then builds an encoder via the face."""
    code = (
        f"import {PKG}.{module}; "
        "from napari_tpm.encoders import build_encoder; "
        "assert build_encoder('filterbank').name == 'filterbank'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
