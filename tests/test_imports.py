"""The package's import structure: no import cycles between its packages and top-level
modules, `models` and `data` independent of each other, `config` knowing nothing of the
vendors, and a light `import inception` / `inception --help` (no ONNX, plotting or
scikit-learn)."""

import ast
import importlib.metadata as md
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import inception
from inception.extras import extra_of

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


# Frameworks that only the interop tests import, from their own environments (`make test-interop`).
_OTHER_ENVIRONMENTS = {"mindspore", "paddle", "paddleclas"}


def _third_party_imports(roots) -> dict[str, set[str]]:
    """``{top-level module: files importing it}`` over every import statement (lazy ones included)
    of the Python files under ``roots``, without the standard library and this project's own."""
    found = defaultdict(set)
    repo = PKG.parent.parent
    for root in roots:
        for path in (repo / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in {"inception", "tests"}:
                        found[top].add(str(path.relative_to(repo)))
    return found


def _declared() -> dict[str, set[str]]:
    """``{group: normalised distribution names}`` of pyproject.toml: "core" and each extra."""
    import tomllib  # noqa: PLC0415 - 3.11+; CI and the venvs run 3.11

    project = tomllib.loads((PKG.parent.parent / "pyproject.toml").read_text())["project"]
    groups = {"core": project["dependencies"], **project["optional-dependencies"]}

    def name(req):
        return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("_", "-")
    return {group: {name(r) for r in reqs} for group, reqs in groups.items()}


def test_every_imported_package_is_declared():
    """Each third-party module the package, the tests or CI's scripts import comes from a
    distribution that pyproject.toml names itself (core or an extra): a test that leans on what
    another package happens to pull in (scipy through scikit-learn) breaks on a clean install, as
    CI found. And each module the package imports outside the core maps to the extra the CLI names."""
    declared = _declared()
    everything = set().union(*declared.values())
    dists = md.packages_distributions()
    imports = _third_party_imports(["src", "tests", ".ci", "docs"])
    assert {"torch", "numpy", "PIL", "pytest"} <= set(imports)                    # the scan saw the imports
    undeclared = {}
    for module, files in sorted(imports.items()):
        if module in _OTHER_ENVIRONMENTS:
            assert all(f.startswith("tests/interop/") for f in files), (module, files)
            continue
        names = {d.lower().replace("_", "-") for d in dists.get(module, ())}
        if not names & everything:
            undeclared[module] = sorted(files)[:3]
    assert not undeclared, f"imported but not declared in pyproject.toml (module: files): {undeclared}"
    package_only = {m for m, files in imports.items() if any(f.startswith("src/") for f in files)}
    for module in sorted(package_only - _OTHER_ENVIRONMENTS):
        names = {d.lower().replace("_", "-") for d in dists.get(module, ())}
        if not names & declared["core"] and module != "timm":      # timm: bench's peer, a one-line UserError
            assert extra_of(module), f"{module} is outside the core but inception/extras.py names no extra for it"
