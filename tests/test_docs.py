"""The documentation holds: the README's shape, every relative link, the library's layout
(every module of the package, and nothing else) and its bring-your-own-model example."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
LIBRARY_DOC = ROOT / "docs" / "library.md"
README_MAX_LINES = 200
# the two commands that work on a fresh machine, first in the README
FIRST_COMMANDS = (
    "bash examples/quickstart.sh",
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest -q",
)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(([^()\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        anchor = github_anchor(match.group(1))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    text = "\n".join(prose_lines(path.read_text(encoding="utf-8")))
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    return [target for target in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def test_the_readme_is_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; at most {README_MAX_LINES}"
    body = [line for line in lines if line.strip()]
    assert body[0].startswith("# "), "the README starts with its title"
    assert body[1].strip() == "```bash", "then a bash block"
    commands = [line.split("#", 1)[0].strip() for line in body[2:4]]
    assert tuple(commands) == FIRST_COMMANDS, commands
    assert (ROOT / "examples" / "quickstart.sh").is_file()


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_and_heading_that_exist(path):
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no file {linked.relative_to(ROOT) if linked.is_relative_to(ROOT) else linked}")
        elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    assert not broken, broken


def test_the_link_checker_reads_links_and_headings_as_github_does(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## `nodeguard roc`\n\n## The library's layout\n\n## A: b, c\n\n## A: b, c\n\n"
        "```bash\n# not a heading\necho [x](nowhere.md)\n```\n\n"
        "See [roc](#nodeguard-roc), ![a picture](pic.png), `[code](not-a-link.md)`, [web](https://example.org).\n",
        encoding="utf-8",
    )
    assert anchors(page) == {"title", "nodeguard-roc", "the-librarys-layout", "a-b-c", "a-b-c-1"}
    assert relative_links(page) == ["#nodeguard-roc", "pic.png"]


def listed_modules() -> set[str]:
    doc = LIBRARY_DOC.read_text(encoding="utf-8")
    section = doc.split("## The library's layout", 1)[1]
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


def test_the_library_layout_lists_every_module():
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


def test_the_bring_your_own_model_example_runs(tmp_path, monkeypatch, registry):
    """The two Python blocks of "Bring your own model": a user's module and its registration."""
    import nodeguard as ng

    doc = LIBRARY_DOC.read_text(encoding="utf-8")
    section = doc.split("## Bring your own model", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    module = next(block for block in blocks if block.startswith("# mypkg/odenet.py"))
    register = next(block for block in blocks if "register_ode_classifier" in block)
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "odenet.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    exec(compile(register, str(LIBRARY_DOC.relative_to(ROOT)), "exec"), {})  # noqa: S102  (the docs' own example)
    loaded = ng.load_model("mine", registry=registry, device="cpu")
    assert loaded.config["model"]["factory"] == "mypkg.odenet:parts" and loaded.tol_train == 1e-3
    assert ng.logits_alone(loaded.model, torch.rand(2, 1, 28, 28))[0].shape == (2, 10)


def check_figures_module():
    """examples/check_figures.py, loaded from its file (examples/ is no package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_figures", ROOT / "examples" / "check_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_checked_figure_and_its_range_are_printed_where_the_check_says():
    import yaml

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    figures = yaml.safe_load((ROOT / "examples" / "readme-figures.yaml").read_text(encoding="utf-8"))["figures"]
    assert figures
    for figure in figures:
        assert figure["readme"] in readme, f"{figure['name']}: the README does not print {figure['readme']!r}"
        page = figure.get("range_in", "README.md")
        assert figure["range_text"] in (ROOT / page).read_text(encoding="utf-8"), f"{figure['name']}: not in {page}"
        low, high = figure["range"]
        assert low <= figure["value"] <= high, f"{figure['name']}: its own value lies outside its range"
        numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", figure["range_text"])]
        if len(numbers) == 2 and figure["range_text"].endswith("%"):  # the printed range is the checked one
            assert [n / 100 for n in numbers] == pytest.approx([low, high]), figure["name"]
        elif len(numbers) == 2:
            assert numbers == pytest.approx([low, high]), figure["name"]


def test_the_figure_check_tells_within_outside_missing_and_unreadable(tmp_path, capsys):
    import json

    check_figures = check_figures_module()
    figures = [
        {
            "name": "auc",
            "readme": "0.85",
            "value": 0.85,
            "range": [0.8, 0.9],
            "file": "roc.json",
            "field": "curves.1.auc",
        },
        {"name": "error", "readme": "2%", "value": 0.02, "range": [0.01, 0.03], "file": "model.json", "field": "err"},
        {"name": "gone", "readme": "1", "value": 1, "range": [0, 2], "file": "absent.json", "field": "x"},
    ]
    (tmp_path / "roc.json").write_text(json.dumps({"curves": [{"auc": 0.5}, {"auc": 0.86}]}))
    (tmp_path / "model.json").write_text(json.dumps({"err": 0.05}))
    lines, within = check_figures.check(figures, tmp_path)
    assert lines[0].endswith("within") and "0.86" in lines[0]
    assert lines[1].endswith("OUTSIDE") and "0.05" in lines[1]
    assert "NOT RUN" in lines[2]
    assert not within
    (tmp_path / "model.json").write_text(json.dumps({"err": 0.025}))
    assert check_figures.check(figures[:2], tmp_path)[1]
    assert not check_figures.check(figures, tmp_path)[1]  # a figure not run fails the check
    (tmp_path / "model.json").write_text(json.dumps({"err": [1]}))  # a field that is no number
    lines, within = check_figures.check(figures, tmp_path)
    assert "UNREADABLE" in lines[1] and not within
    yaml_file = tmp_path / "figures.yaml"
    import yaml

    yaml_file.write_text(yaml.safe_dump({"figures": figures[:1]}))
    assert check_figures.main([str(tmp_path), "--figures", str(yaml_file)]) == 0
    assert "1 of 1 figures checked: all within" in capsys.readouterr().out


def test_the_figure_check_refuses_a_folder_that_is_not_there(tmp_path, capsys):
    check_figures = check_figures_module()
    with pytest.raises(SystemExit) as exit_info:
        check_figures.main([str(tmp_path / "absent")])
    assert exit_info.value.code == 2
    assert "is not a folder" in capsys.readouterr().err


def test_the_rounding_script_solves_each_float_adversarial_at_its_8bit_versions_draws():
    """Rows 0 and 3 succeed both ways, row 1 only as a float, row 2 only on the grid: the
    float rows take their 8-bit versions' draws where there is one, else keep their own."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("rounding", ROOT / "examples" / "rounding_security.py")
    assert spec is not None and spec.loader is not None
    rounding = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rounding)
    success = torch.tensor([True, True, False, True])
    success_8bit = torch.tensor([True, False, True, True])
    float_draws = torch.tensor([[1.0, 1.5], [2.0, 2.5], [4.0, 4.5]], dtype=torch.float64)  # rows 0, 1, 3
    grid_draws = torch.tensor([[10.0, 10.5], [30.0, 30.5], [40.0, 40.5]], dtype=torch.float64)  # rows 0, 2, 3
    chosen = rounding.tolerances_at_8bit_draws(float_draws, grid_draws, success, success_8bit)
    assert chosen.tolist() == [[10.0, 10.5], [2.0, 2.5], [40.0, 40.5]]
    assert float_draws[0, 0] == 1.0  # the float votes' own draws are left as they were


def test_the_rounding_cause_scripts_variants_round_without_bias_or_pull_toward_the_clean_image_as_claimed():
    """Stochastic rounding lands next to the float with the float's mean and leaves levels
    alone; zeroing takes exactly the components below 1/510; the random-sign change moves
    each pixel by nearest rounding's change, up or down."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("cause", ROOT / "examples" / "rounding_cause.py")
    assert spec is not None and spec.loader is not None
    cause = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cause)
    clean_levels = torch.tensor([0.0, 0.0, 0.0, 100.0, 254.0, 255.0, 37.0]).view(1, 1, 1, 7)
    delta_levels = torch.tensor([0.0, 0.3, 0.6, 0.9, 0.2, 0.0, -1.25]).view(1, 1, 1, 7)
    clean = clean_levels / 255
    adversarial = clean + delta_levels / 255
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([cause.stochastic_rounding(adversarial, clean, generator) for _ in range(4000)]) * 255
    target = clean_levels + delta_levels
    assert torch.equal(draws, draws.round())  # every draw is an 8-bit image
    assert bool(((draws - target).abs() < 1).all())  # the level below or the level above
    # the mean of 4000 coin flips lies within 5 standard errors (<= 0.5 / sqrt(4000)) of p
    assert torch.allclose(draws.mean(0), target, atol=5 * 0.5 / 4000**0.5)
    unchanged = delta_levels == 0
    assert torch.equal(draws[:, unchanged], clean_levels[unchanged].expand(4000, -1))  # levels stay exactly
    zeroed = cause.small_components_zeroed(adversarial, clean) * 255 - clean_levels
    assert torch.allclose(zeroed, torch.tensor([0.0, 0.0, 0.6, 0.9, 0.0, 0.0, -1.25]).view(1, 1, 1, 7), atol=1e-4)
    nearest_change = cause.nearest_rounding(adversarial) - adversarial
    for _ in range(20):
        moved = cause.random_sign_change(adversarial, generator) - adversarial
        assert torch.allclose(moved.abs(), nearest_change.abs(), atol=1e-6)


def test_the_security_variation_table_takes_the_union_of_every_runs_interval(tmp_path, capsys):
    """Hand-made ``security --json`` files: the printed ranges are the runs' lowest and
    highest values and the union of their Clopper-Pearson intervals, by construction."""
    import importlib.util

    from nodeguard.intervals import Rate

    spec = importlib.util.spec_from_file_location("svt", ROOT / "examples" / "security_variation_table.py")
    assert spec is not None and spec.loader is not None
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)

    def report(fooled: int, model: str = "m") -> dict:
        rate = Rate.of(fooled, 100).to_dict()
        point = {"label": "cw k=0", "defended_success": rate, "success_rate": Rate.of(100, 100).to_dict()}
        curve = [{"eps": 1.0, "robust_accuracy_defended": Rate.of(100 - fooled, 100).to_dict()}]
        return {
            "model": model,
            "vmin": 14,
            "pristine_accepted": Rate.of(100, 100).to_dict(),
            "points": [{**point, "median_l2": 1.0 + fooled / 100}],
            "curve": curve,
        }

    runs = {"security-draws0": 10, "security-draws1": 14, "security-attack1": 20, "security-model1": 6}
    for name, fooled in runs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(report(fooled)))
    assert table.main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    intervals = [Rate.of(fooled, 100).interval for fooled in runs.values()]
    low, high = min(i[0] for i in intervals), max(i[1] for i in intervals)
    union = f"{math.floor(low * 100)}-{math.ceil(high * 100)}%"
    assert "| cw k=0 | 10-14% | 10-20% | 6-10% | 10% [" in printed and printed.count(union) == 1
    assert "| cw k=0 | 100% | 1.060-1.200 |" in printed
    assert "rounding" not in printed  # no rounding_security.py files: no column

    def rounding(grid: int, floats: int) -> dict:
        pair = {"8bit": Rate.of(grid, 100).to_dict(), "float_8bit_draws": Rate.of(floats, 100).to_dict()}
        return {
            "rows": [{"label": "cw k=0", **{name: {"defended_success": rate} for name, rate in pair.items()}}],
            "robust_accuracy_defended": [{"eps": 1.0, **pair}],
        }

    for name, (grid, floats) in {"m": (10, 8), "m-seed1": (14, 17)}.items():
        (tmp_path / f"security-rounding-{name}.json").write_text(json.dumps(rounding(grid, floats)))
    assert table.main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    # float minus 8-bit: -2 and +3 points; the union is the runs' alone, as before
    assert "| cw k=0 | 10-14% | 10-20% | 6-10% | -2 to +3 | 10% [" in printed and printed.count(union) == 1
    assert "8-bit rounding, points (2 models)" in printed
    assert "| robust accuracy, defended, L2 1 | 86-90% | 80-90% | 90-94% | -2 to +3 |" in printed
    assert table.move_range([0, 0]) == "0" and table.move_range([1]) == "+1" and table.move_range([0, 4]) == "0 to +4"
    with pytest.raises(SystemExit):
        table.main([str(tmp_path / "nothing")])
