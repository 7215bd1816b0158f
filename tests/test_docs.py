"""The docs: generated references up to date with the code, a short README, a nav with no missing page,
README links that land. Fast: no site build here (`make test` runs `mkdocs build --strict` before pytest)."""

import importlib.util
import re
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
STALE = "stale: run .venv/bin/python docs/gen_reference.py"


def _gen():
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen():
    return _gen()


def test_generated_config_reference_is_current(gen):
    assert (ROOT / "docs/reference/config.md").read_text() == gen.config_reference(), STALE


def test_generated_models_page_and_readme_table_are_current(gen):
    assert (ROOT / "docs/models.md").read_text() == gen.models_page(), STALE
    assert (ROOT / "README.md").read_text() == gen.readme(), STALE


def test_generated_cli_reference_is_current(gen):
    committed = (ROOT / "docs/reference/cli.md").read_text()
    made = re.search(re.escape(gen.PYTHON_NOTE) + r" (\d+\.\d+)", committed)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if made and made.group(1) != here:   # argparse lays help out differently from one Python to the next
        pytest.skip(f"cli.md was generated with Python {made.group(1)}, this is {here}")
    assert committed == gen.cli_reference(), STALE


def test_every_generated_file_starts_with_the_generated_comment(gen):
    for path in gen.outputs():
        if path.suffix == ".md" and path.name != "README.md":
            assert path.read_text().startswith(gen.HEADER + "\n"), path


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the rest belongs in docs/"


def _nav_pages(nav) -> list[str]:
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_nav_page_exists():
    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    docs = ROOT / cfg.get("docs_dir", "docs")
    pages = _nav_pages(cfg["nav"])
    assert len(pages) >= 15
    missing = [p for p in pages if not (docs / p).is_file()]
    assert not missing, f"mkdocs.yml nav names missing pages: {missing}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading (where README links are followed)."""
    text = re.sub(r"[^\w\- ]", "", unicodedata.normalize("NFKC", heading.replace("`", "")).lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)   # no headings in code blocks
    return {_slug(m.group(1).strip()) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_readme_links_into_the_docs_land():
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert any(link.startswith("docs/") for link in local)
    for link in local:
        target, _, anchor = link.partition("#")
        path = ROOT / target
        assert path.is_file(), f"README.md links to {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(path), f"README.md links to {link}: {target} has no heading '#{anchor}'"
