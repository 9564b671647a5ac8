"""The layout shows the architecture: which package may import which, no import cycles,
and a service that runs without the training package."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "model_training", "wbc_core", "bench")
MAY_IMPORT = {  # a package may import itself and these
    "wbc_core": set(),
    "model_training": {"wbc_core"},
    "app": {"wbc_core"},
    "bench": {"app", "wbc_core", "model_training"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports, anywhere in its code (lazy imports too)."""
    modules = {module_name(p): p for pkg in PACKAGES for p in (PROJECT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            targets |= {n for n in names if n in modules}
        graph[name] = targets - {name}
    return graph


def test_packages_import_only_what_they_may() -> None:
    wrong = [
        f"{src} imports {dst}"
        for src, dsts in project_imports().items()
        for dst in dsts
        if dst.split(".")[0] != src.split(".")[0]
        and dst.split(".")[0] not in MAY_IMPORT[src.split(".")[0]]
    ]
    assert not wrong, wrong


def test_no_import_cycles() -> None:
    graph = project_imports()
    for pkg_module in graph:  # a package's __init__ is imported with any of its modules
        graph[pkg_module] = {d for d in graph[pkg_module] if d not in PACKAGES}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_service_runs_without_the_training_package(tiny_model: Path) -> None:
    """Import the app and serve a prediction with ``model_training`` unimportable."""
    code = textwrap.dedent(f"""
        import importlib.abc, io, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "model_training" or name.startswith("model_training."):
                    raise ImportError("model_training is not installed here")
        sys.meta_path.insert(0, Block())
        from fastapi.testclient import TestClient
        from PIL import Image
        from app.config import Settings
        from app.main import create_app
        sys.path.insert(0, {str(PROJECT)!r})
        from tests.synthetic import class_image
        buf = io.BytesIO(); class_image(1, 3).save(buf, "JPEG")
        with TestClient(create_app(Settings(model_dir={str(tiny_model)!r}))) as c:
            r = c.post("/predict", files={{"file": ("c.jpg", buf.getvalue(), "image/jpeg")}})
            assert r.status_code == 200, r.text
            assert r.json()["label"] in ("eosinophil", "lymphocyte", "monocyte", "neutrophil",
                                         "unknown")
            assert c.post("/explain", files={{"file": ("c.jpg", buf.getvalue(),
                                                       "image/jpeg")}}).status_code == 200
        assert not any(m.startswith("model_training") for m in sys.modules)
        print("served without model_training")
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "served without model_training" in out.stdout
