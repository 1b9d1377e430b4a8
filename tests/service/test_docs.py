"""The docs stay true to the code: every environment variable the settings read is documented, and every
link in the README and docs/ leads to a file of this repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_setting_read_from_the_environment_is_documented():
    read = set(
        re.findall(
            r'env_(?:str|int|bool|list)\("([A-Z0-9_]+)"', (ROOT / "agegender_site/settings.py").read_text()
        )
    )
    documented = (ROOT / "docs/configuration.md").read_text()
    assert read and not {name for name in read if f"`{name}`" not in documented}


def test_links_lead_to_files_of_the_repository():
    for page in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
            assert not target.startswith(("http", "../../")), (page.name, target)
            assert (page.parent / target).resolve().is_relative_to(ROOT), (page.name, target)
            assert (page.parent / target).exists(), (page.name, target)
