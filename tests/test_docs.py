"""README is the newcomer's guide and docs/ the reference: every page is linked from README, and every local
link in them names a file that exists."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted((REPO / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def local_links(page: Path) -> list[str]:
    return [target for target in LINK.findall(page.read_text()) if not target.startswith(("http://", "https://"))]


def test_readme_keeps_the_two_commands_ci_and_the_hook_rely_on():
    text = (REPO / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    assert "## What behaves differently in this version" in text  # issue 50


def test_readme_links_every_docs_page():
    linked = {target for target in local_links(REPO / "README.md") if target.startswith("docs/")}
    assert linked == {f"docs/{page.name}" for page in PAGES}


def test_every_local_link_in_readme_and_docs_names_a_file_that_exists():
    broken = [f"{page.relative_to(REPO)}: {target}" for page in [REPO / "README.md", *PAGES]
              for target in local_links(page) if not (page.parent / target).exists()]
    assert broken == []
