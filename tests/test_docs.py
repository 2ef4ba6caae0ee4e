"""README.md, docs/ and the records' and experiments' READMEs: every relative link names a file of
the repository, none leaves it."""
from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "records" / "README.md",
         *sorted((ROOT / "records").glob("*/*/README.md")), *sorted((ROOT / "experiments").glob("*/README.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_link_resolves_inside_the_repository(page):
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "#", "mailto:")):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        assert path.is_relative_to(ROOT), f"{page.name}: {target} leaves the repository"
        assert path.exists(), f"{page.name}: {target} does not exist"


def test_the_readme_is_an_overview_a_newcomer_reads_in_minutes():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 200
    assert all((ROOT / "docs" / name).exists() for name in ("settings.md", "design.md", "comparing.md", "measured.md"))
