"""The docs site: it builds strictly, every page renders in Chromium with its links and anchors
resolving, the generated reference lists every setting and field, and the first benchmark the
README and the getting-started page show is the example that runs."""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import pytest
from browser import ELEMENT_ID, broken_links, file_doms, find_browser

from pytest_llem.config import ExperimentConfig
from pytest_llem.settings import SETTINGS

ROOT = Path(__file__).parents[2]
FIRST_BENCHMARK = ROOT / "examples" / "first_benchmark" / "test_first_benchmark.py"
BROWSER = find_browser()
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no Chromium (Debian: apt-get install chromium)")
needs_mkdocs = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None, reason="MkDocs is not installed: pip install -e '.[dev]'"
)
# Material's main content; its text is the page's own, without the navigation.
ARTICLE = re.compile(r'<article class="md-content__inner[^"]*">(.*?)</article>', re.S)


def _reference_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "docs_reference_hook", ROOT / "docs" / "hooks" / "reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built as `make docs` builds it (strict), from this checkout's code."""
    target = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(target)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target


def test_the_reference_page_lists_every_option_ini_key_and_field():
    page = _reference_hook().reference_page()
    for setting in SETTINGS:
        assert f'<span id="{setting.option.lstrip("-")}"></span>`{setting.option}' in page, setting.name
        assert f"<br>`{setting.ini_name}" in page, setting.name
        assert setting.help.split()[0] in page, setting.name
    for name, field in ExperimentConfig.model_fields.items():
        assert f'<span id="field-{name}"></span>`{name}`' in page, name
        assert field.description, f"{name}: give it Field(description=...) so the reference explains it"


@needs_mkdocs
def test_the_built_reference_lists_every_option_and_field(site: Path):
    page = (site / "reference" / "configuration" / "index.html").read_text(encoding="utf-8")
    ids = set(ELEMENT_ID.findall(page))
    for setting in SETTINGS:
        assert setting.option.lstrip("-") in ids and f"<code>{setting.option}" in page, setting.name
        assert f"<code>{setting.ini_name}" in page, setting.name
    for name in ExperimentConfig.model_fields:
        assert f"field-{name}" in ids, name


@needs_mkdocs
@needs_browser
def test_every_page_renders_with_content_and_every_internal_link_resolves(site: Path):
    assert BROWSER is not None
    pages = sorted(p for p in site.rglob("index.html"))
    assert len(pages) >= 15, [str(p.relative_to(site)) for p in pages]
    doms = file_doms(BROWSER, pages)
    broken = []
    for page, dom in doms.items():
        article = ARTICLE.search(dom)
        assert article, f"{page.relative_to(site)}: no main content"
        text = html.unescape(re.sub(r"<[^>]+>", " ", article.group(1)))
        assert len(text.split()) >= 40, f"{page.relative_to(site)}: main content nearly empty: {text!r}"
        broken += [f"{page.relative_to(site)}: {link}" for link in broken_links(page, dom, doms)]
    assert not broken, "\n".join(broken)


def test_the_readme_shows_the_first_benchmark_as_it_is_in_examples():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert FIRST_BENCHMARK.read_text(encoding="utf-8") in blocks
    getting_started = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    assert '--8<-- "examples/first_benchmark/test_first_benchmark.py"' in getting_started


def test_the_readme_links_to_files_that_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if not urlsplit(t).scheme]
    assert len(local) >= 10, local
    assert [t for t in local if not (ROOT / t).exists()] == []


@pytest.mark.parametrize("mode", [[], ["--llem-smoke"]], ids=["measured", "smoke"])
def test_the_first_benchmark_runs(tmp_path: Path, mode: list[str]):
    # As the README runs it (each case measured for its minimum window, its own assertions on
    # the passes that took) and in smoke mode (one prompt and one token each), in real processes.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--llem",
            *mode,
            "-p",
            "no:cacheprovider",
            str(FIRST_BENCHMARK),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTEST_LLEM_STATE_DIR": str(tmp_path / "state")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert re.search(r"\b4 passed\b", proc.stdout), proc.stdout[-2000:]
