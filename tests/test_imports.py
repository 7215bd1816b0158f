"""The package's import structure: no import cycles between its packages and top-level
modules, `models` and `data` independent of each other, `config` knowing nothing of the
vendors, and a light `import inception` / `inception --help` (no ONNX, plotting or
scikit-learn)."""

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import inception

PKG = Path(inception.__file__).resolve().parent


def _module_level(body):
    for stmt in body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            yield stmt
        elif isinstance(stmt, ast.If) and "TYPE_CHECKING" not in ast.unparse(stmt.test):
            yield from _module_level(stmt.body + stmt.orelse)
        elif isinstance(stmt, ast.Try):
            yield from _module_level(stmt.body + stmt.orelse + stmt.finalbody)


def import_graph() -> dict[str, set[str]]:
    """``{unit: units it imports at module level}``, where a unit is a sub-package
    (``models``, ``data``...) or a top-level module (``config``, ``cli``...) of inception;
    imports inside functions (deliberately lazy) are not edges."""
    edges = defaultdict(set)
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts        # ('inception', 'engine', 'loop')
        unit, package = parts[1], parts[:-1]
        for stmt in _module_level(ast.parse(path.read_text()).body):
            if isinstance(stmt, ast.Import):
                targets = [a.name.split(".")[1] for a in stmt.names if a.name.startswith("inception.")]
            else:
                base = package[:len(package) - (stmt.level - 1)] if stmt.level else ()
                full = (*base, *stmt.module.split(".")) if stmt.module else base
                if full[:1] != ("inception",):
                    continue
                targets = [full[1]] if len(full) > 1 else [a.name for a in stmt.names]
            edges[unit].update(t for t in targets if t != unit)
    return edges


def _reaches(edges, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _cycles(edges) -> list[tuple[str, str]]:
    return sorted({tuple(sorted((a, b))) for a in edges for b in _reaches(edges, a)
                   if a != b and a in _reaches(edges, b)})


def test_no_import_cycles_between_packages():
    edges = import_graph()
    assert {"models", "config", "data"} <= edges["engine"] and {"spec", "utils"} <= edges["models"]
    assert {"config", "spec"} <= edges["data"] and "config" in edges["vendor_config"]       # the graph was read
    assert not _cycles(edges), f"import cycles between packages: {_cycles(edges)}"
    assert "data" not in _reaches(edges, "models") and "models" not in _reaches(edges, "data")
    assert not {"vendor_config", "models", "data"} & _reaches(edges, "config")


def test_config_knows_nothing_of_vendors():
    text = (PKG / "config.py").read_text()
    assert "vendor_config" not in text.replace("inception.vendor_config.load_config", "")


def test_the_import_graph_sees_a_cycle():
    """The checker itself: a cycle planted in a copy of the graph is found."""
    edges = import_graph()
    edges["models"] = edges["models"] | {"data"}
    edges["data"] = edges["data"] | {"models"}
    assert _cycles(edges) == [("data", "models")]


def test_import_and_help_stay_light():
    heavy = ("onnx", "onnxruntime", "onnxscript", "matplotlib", "sklearn", "fastapi", "uvicorn")
    code = ("import sys, contextlib, io\nimport inception\nfrom inception.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    for argv in (['--help'], ['train', '--help']):\n"
            "        try:\n            main(argv)\n        except SystemExit:\n            pass\n"
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"`import inception` / `inception --help` imported {out.stdout.strip()}"
