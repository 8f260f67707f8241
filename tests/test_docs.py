"""The README's layout section lists every module of the package, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def listed_modules() -> set[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The library's layout", 1)[1]
    block = section.split("```text", 1)[1].split("```", 1)[0]
    names: set[str] = set()
    for line in block.splitlines():
        if line.strip() == "nodeguard/":
            continue
        # a line lists paths relative to nodeguard/, then says what they are
        for token in line.split():
            if re.fullmatch(r"[a-z_/]+(\.py|/)", token):
                names.add(token)
            else:
                break
    return names


def test_the_readme_layout_lists_every_module():
    package = ROOT / "nodeguard"
    actual = {
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "__init__.py" or path.parent in (package, package / "cli")
    }
    listed = listed_modules()
    recipes = {"training/recipes/"}
    expected = actual - {"training/recipes/__init__.py"}
    assert listed - recipes == expected, (sorted(expected - listed), sorted(listed - recipes - expected))
