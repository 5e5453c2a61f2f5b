"""The engine's shape, checked: packages by purpose with one dependency rule (import-linter's
contracts in pyproject.toml), no import circle between modules, lazy imports counted, few modules
left flat in core/, and no module too long to read. `python -m pytest tests/test_layers.py` or
`.venv/bin/lint-imports` checks it; docs/ARCHITECTURE.md draws it."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parent.parent
MAX_FLAT_MODULES = 12          # modules directly in core/ (the rest live in packages)
MAX_MODULE_LINES = 500         # core/, ui/ and pages/
MAX_PAGE_LINES = 400           # a page holds its body: guard, widgets, config, call, render
GENERATED = ("grpc_gen",)      # protoc's stubs: not ours to shape


def _graph() -> grimp.ImportGraph:
    # grimp reads every import statement of every module, those inside functions included
    return grimp.build_graph("core", cache_dir=None)


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of 2+ modules (Tarjan), i.e. every import circle."""
    nodes = sorted(m for m in graph.modules if not any(g in m for g in GENERATED))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index and w in nodes:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for n in nodes:
        if n not in index:
            visit(n)
    return out


def test_the_layer_contracts_hold():
    """base <- data | models <- formats <- measure <- compress | viz <- store <- tasks <- run | io <- cli | lessons,
    plus: viz imports only base and measure; core never imports Streamlit; pruning never the training loop."""
    out = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache",
                          str(REPO / "pyproject.toml")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "0 broken" in out.stdout, out.stdout[-4000:] + out.stderr[-2000:]


def test_no_import_circles_between_modules_lazy_imports_included():
    assert _cycles(_graph()) == []


def test_lazy_imports_are_in_the_graph(tmp_path, monkeypatch):
    """The graph counts an import inside a function: a circle closed lazily is still a circle."""
    pkg = tmp_path / "lazypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from lazypkg import b\n")
    (pkg / "b.py").write_text(textwrap.dedent("""
        def later():
            from lazypkg import a   # lazy, yet an edge b -> a
            return a
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("lazypkg", cache_dir=None)
    assert graph.direct_import_exists(importer="lazypkg.b", imported="lazypkg.a")
    assert _cycles_of(graph, "lazypkg") == [["lazypkg.a", "lazypkg.b"]]


def _cycles_of(graph: grimp.ImportGraph, root: str) -> list[list[str]]:
    return [c for c in _cycles(graph) if all(m.startswith(root) for m in c)]


def test_few_modules_lie_flat_in_core():
    flat = sorted(p.name for p in (REPO / "core").glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(flat) <= MAX_FLAT_MODULES, f"{len(flat)} modules directly in core/: {flat}"


def test_core_init_imports_nothing():
    """`import core` is cheap: its __init__ is a docstring (a package's own __init__ may re-export)."""
    import ast

    tree = ast.parse((REPO / "core" / "__init__.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_every_package_says_what_it_holds_and_may_import():
    for init in sorted((REPO / "core").rglob("__init__.py")):
        if any(g in init.parts for g in GENERATED):
            continue
        doc = (init.read_text().split('"""') + ["", ""])[1].strip()
        assert doc, f"{init.relative_to(REPO)} has no docstring saying what lives there and what it may import"
        assert "import" in doc.lower(), f"{init.relative_to(REPO)}: say what the package may import"


@pytest.mark.parametrize("folder", ["core", "ui", "pages"])
def test_no_module_is_too_long(folder):
    limit = MAX_PAGE_LINES if folder == "pages" else MAX_MODULE_LINES
    long = {str(p.relative_to(REPO)): n for p in (REPO / folder).rglob("*.py")
            if not any(g in p.parts for g in GENERATED) and (n := len(p.read_text().splitlines())) > limit}
    assert not long, f"modules over {limit} lines: {long}"
