"""The README and the pages of docs/ say what the committed results say.

* A block written as ``<!-- include: ../results/cpu/tables/table1.md -->`` ... ``<!-- end -->``
  is that file's text (``make figures`` pastes them; paths are relative to the page).
* The README's headline numbers are in the results tables its ``<!-- headline: ... -->``
  comment names; its example runs; it stays short enough to read in five minutes.
* Every ``nic_core.module.name`` cited exists, and every link to a page or heading resolves.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nic_core import readme_includes

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "DESIGN.md", *sorted((ROOT / "docs").glob("*.md"))]
README = (ROOT / "README.md").read_text()


def test_the_readme_is_short_and_the_docs_exist():
    assert len(README.splitlines()) <= 200
    assert len((ROOT / "DESIGN.md").read_text().splitlines()) <= 120
    docs = {p.name for p in PAGES if p.parent.name == "docs"}
    assert {"results.md", "protocol.md", "reproduction.md", "reliability.md",
            "benchmarks.md"} <= docs
    for page in PAGES:
        if page.parent.name == "docs":
            assert "Contents:" in page.read_text(), f"{page.name} has no table of contents"


def _includes():
    """(page, path, block) per include block, found by the pattern make figures fills them with."""
    return [(page, m.group(2), m.group(3)) for page in PAGES
            for m in readme_includes.INCLUDE.finditer(page.read_text())]


@pytest.mark.parametrize("page, path, block", _includes(),
                         ids=[f"{p.name}:{f}" for p, f, _ in _includes()])
def test_include_blocks_equal_their_files(page, path, block):
    """Blocks written as ``<!-- include: FILE -->`` are the file's text (which
    tests/test_notebooks.py checks against what make figures builds from the results)."""
    assert block.strip() == (page.parent / path).read_text().strip(), \
        f"{page.name}: block differs from {path}: run make figures"


def test_every_results_table_of_the_docs_is_included_somewhere():
    assert len(_includes()) >= 30


def _signed_numbers(text):
    return set(re.findall(r"(?<![\w.])[+-]\d+\.\d+", text))


def test_the_headline_numbers_are_in_the_results_it_names():
    """Each signed number of the README's headline paragraph occurs in one of the committed
    tables its comment names (a re-evaluation that moves a number fails here until the
    headline is rewritten). Unsigned numbers there are the paper's or restate a signed one."""
    m = re.search(r"<!-- headline: (.*?) -->\n(.*?)\n!\[", README, re.S)
    assert m, "the README's headline paragraph carries a <!-- headline: ... --> comment"
    files = re.findall(r"results/\S+\.md", m.group(1))
    assert len(files) >= 2
    tables = "\n".join((ROOT / f).read_text() for f in files)
    numbers = _signed_numbers(m.group(2))
    assert len(numbers) >= 8
    missing = sorted(n for n in numbers if n not in tables)
    assert not missing, f"headline numbers not in {files}: {missing}"
    for n in ("4.45", "6.75"):     # the unsigned attack-strength numbers: the saturation table's
        assert f"-{n}" in tables and n in m.group(2)


def test_the_headline_counts_of_the_grid_are_its_marks():
    import csv
    with open(ROOT / "results/cpu/tables/verdict_grid.csv") as f:
        cells = list(csv.DictReader(f))
    text = re.sub(r"\s+", " ", README)
    said = re.search(r"on damage (\d+) of (\d+) cells confirmed, (\d+) refuted, (\d+) not "
                     r"significant .*? under attack (\d+) of (\d+) cells confirmed, (\d+) refuted",
                     text)
    assert said, "the headline states the grid's counts"
    count = {r: [c["verdict"] for c in cells if c["ruler"] == r] for r in ("damage", "absolute")}
    n = {r: (sum(v.startswith("confirmed") for v in vs), len(vs),
             sum(v.startswith("refuted") for v in vs)) for r, vs in count.items()}
    got = [int(x) for x in said.groups()]
    assert got[:3] + got[4:] == [*n["damage"], *n["absolute"]]
    assert got[3] == sum(v.startswith("not confirmed") for v in count["damage"])


def test_the_headline_test_can_fail():
    assert _signed_numbers("PKDT +0.50 dB, rate -24.47 and 1.5") == {"+0.50", "-24.47"}


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path):
    """The README's own-codec example, as written, in a fresh folder (the committed model found
    through a link): it attacks, evaluates with real bitstreams and writes the results JSON."""
    code = re.search(r"<!-- example: .*? -->\n```python\n(.*?)```", README, re.S).group(1)
    (tmp_path / "models").symlink_to(ROOT / "models")
    (tmp_path / "example.py").write_text(code)
    run = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    line = re.search(r"([\d.]+) -> ([\d.]+) dB at noise MSE ([\d.e+-]+)", run.stdout)
    clean, attacked, mse = map(float, line.groups())
    assert clean - attacked > 1.0 and mse <= 5e-4 * (1 + 1e-9)
    res = json.loads((tmp_path / "my_codec.json").read_text())
    assert [r["name"] for r in res["per_image"]] == ["kodim01", "kodim02"] or \
        res["dataset"].startswith("FALLBACK")
    assert all(r["height"] == r["width"] == 128 for r in res["per_image"])
    worst = res["attacks"]["worst-psnr"]["results"]["psnr-rgb"][0]
    assert worst <= res["results"]["psnr-rgb"][0] - 1.0
    assert set(res["attacks"]["worst-psnr"]["members"]) == {"apgd-psnr", "apgd-bpp", "noise"}


def test_names_of_nic_core_exist():
    """Every `nic_core.module.name` the README, DESIGN.md or docs/ cite in code quotes exists (a
    function moved to another module leaves a stale name behind otherwise)."""
    import importlib
    cited = set()
    for page in PAGES:
        cited |= set(re.findall(r"`nic_core\.([a-z_]+)\.([A-Za-z_]\w*)", page.read_text()))
    assert len(cited) >= 10
    missing = [f"nic_core.{m}.{n}" for m, n in sorted(cited)
               if not hasattr(importlib.import_module(f"nic_core.{m}"), n)]
    assert not missing, missing


def _slug(heading):
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page):
    anchors, fence = set(), False
    for line in page.read_text().splitlines():
        fence ^= line.startswith("```")
        if not fence and line.startswith("#"):
            anchors.add(_slug(line.lstrip("#")))
    return anchors


def test_links_to_pages_and_headings_resolve():
    """Every relative link of the README, DESIGN.md and docs/ names a file that exists and, with
    ``#anchor``, a heading of that file (the docs link each other's sections)."""
    broken, count = [], 0
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            count += 1
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert count >= 40
    assert not broken, broken
