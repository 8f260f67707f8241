"""The README's layout section lists every module of the package, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import torch

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


def test_the_readme_bring_your_own_model_example_runs(tmp_path, monkeypatch, registry):
    """The two Python blocks of "Bring your own model": a user's module and its registration."""
    import nodeguard as ng

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Bring your own model", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    module = next(block for block in blocks if block.startswith("# mypkg/odenet.py"))
    register = next(block for block in blocks if "register_ode_classifier" in block)
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "odenet.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    exec(compile(register, "README.md", "exec"), {})  # noqa: S102  (the README's own example)
    loaded = ng.load_model("mine", registry=registry, device="cpu")
    assert loaded.config["model"]["factory"] == "mypkg.odenet:parts" and loaded.tol_train == 1e-3
    assert ng.logits_alone(loaded.model, torch.rand(2, 1, 28, 28))[0].shape == (2, 10)
