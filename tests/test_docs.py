"""The docs: a short README with the commands CI runs near its top, a page per script and per tool, links and images
that resolve, a license, and only the four algorithm scripts at the top level."""

import importlib
import re
from pathlib import Path

import pytest

from conftest import ROOT, SCRIPTS

PAGES = [*(f"docs/{Path(script).stem}.md" for script in SCRIPTS), "docs/runs.md", "docs/benchmarks.md",
         "docs/tuning.md"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # a '#' comment in a code block is no heading
    return {github_anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def test_readme_is_short_and_starts_with_the_commands_ci_runs():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    head = "\n".join(lines[:40])
    assert "pip install -r requirements.txt" in head and "python -m pytest -q tests" in head
    assert "python -m pytest -q tests" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("page", ["README.md", *PAGES])
def test_every_local_link_and_image_resolves(page):
    path = ROOT / page
    assert path.is_file(), f"{page} is missing"
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{page} links to {target}, which does not exist"
        if anchor:
            assert anchor in anchors(linked), f"{page} links to {target}: no such heading in {linked.name}"


def test_every_script_and_tool_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    assert all(f"({page})" in readme for page in PAGES)


def test_a_license_lets_a_copied_script_be_used():
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "Permission is hereby granted, free of charge" in license_text
    assert "LICENSE" in (ROOT / "README.md").read_text()


def test_the_top_level_holds_only_the_four_algorithm_scripts():
    assert sorted(path.name for path in ROOT.glob("*.py")) == sorted(SCRIPTS)


def test_the_text_speaks_of_the_project_not_of_who_wrote_it_when():
    for page in ["README.md", *PAGES]:
        assert not re.search(r"\bsessions?\b", (ROOT / page).read_text(), flags=re.I), page


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_flag_the_docs_give_a_script_exists(script):
    module = importlib.import_module(script.removesuffix(".py"))
    known = {name.replace("_", "-") for kind in (module.Args, module.RunArgs) for name in kind.__dataclass_fields__}
    known |= {"no-" + name for name in known} | {"help"}
    flags = {page: set() for page in ["README.md", *PAGES]}
    for page in flags:
        for line in (ROOT / page).read_text().splitlines():
            if f"python {script} " in line:  # a command line of this script (before a shell comment)
                command = line.split(f"python {script} ", 1)[1].split("#")[0]
                flags[page] |= set(re.findall(r"(?<![\w-])--([a-z][a-z0-9-]*)", command.split(" -- ")[0]))
    assert flags["README.md"], f"no command line of {script} with a flag in the README"
    unknown = set().union(*flags.values()) - known
    assert not unknown, f"{script} has no flag {sorted(unknown)}: {[page for page in flags if flags[page] & unknown]}"
