"""The documentation in docs/: every `$ predsim ...` command in a ```console block runs.

Each page's commands run in order, in a fresh folder holding a copy of the repository's
scenarios/ and schema/, with the predsim installed next to the running Python, through bash (so
quoting and redirections work as in a terminal). Only the exit code is checked: the outputs shown
in the docs are abridged. Commands elsewhere (```text blocks, shell set-up lines) are not run.
Links between the pages and from the README resolve, anchors (GitHub's heading slugs) included.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sim.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = ["tutorial.md", "running.md", "architectures.md", "model.md", "glossary.md",
         "measuring-inputs.md", "reports.md", "sweeps.md", "verification.md", "fidelity.md",
         "performance.md", "completion.md", "pipelines.md", "testing-in-production.md",
         "deployment.md"]
BIN = Path(sys.executable).parent

_FENCED = re.compile(r"^```([\w-]*)\n(.*?)^```", re.S | re.M)
_INLINE = re.compile(r"`([^`\n]+)`")


def console_commands(text: str) -> list[str]:
    """`$ predsim ...` lines of ```console blocks (a trailing backslash continues a line)."""
    commands = []
    for lang, body in _FENCED.findall(text):
        if lang != "console":
            continue
        lines = body.splitlines()
        i = 0
        while i < len(lines):
            if lines[i].startswith("$ predsim"):
                command = lines[i][2:]
                while command.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    command = command[:-1] + lines[i]
                commands.append(command)
            i += 1
    return commands


def mentioned_commands(text: str) -> set[str]:
    """Sub-commands named in code: `predsim WORD` in fenced blocks and inline code spans
    (leaving out words being completed, `predsim ex<Tab>`, and completion requests)."""
    code = [body for _, body in _FENCED.findall(text)]
    code += _INLINE.findall(_FENCED.sub("", text))
    lines = [line for chunk in code for line in chunk.splitlines()
             if "_PREDSIM_COMPLETE=bash_complete" not in line]
    return {m for line in lines for m in re.findall(r"\bpredsim ([a-z][\w-]*)(?![\w<-])", line)}


def test_every_page_exists_and_the_readme_links_to_it():
    readme = (ROOT / "README.md").read_text()
    assert "\n## Documentation\n" in readme
    section = readme.split("\n## Documentation\n", 1)[1]
    for page in PAGES:
        assert (DOCS / page).is_file(), page
        assert f"(docs/{page})" in section, f"README.md does not link docs/{page}"


_LINK = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)")


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as
    hyphens, a repeated heading numbered (-1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", _FENCED.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def _check_links(path: Path):
    text = path.read_text()
    for target, anchor in _LINK.findall(_FENCED.sub("", text)):
        if "://" in target or target.startswith("mailto:"):
            continue
        file = (path.parent / target).resolve() if target else path
        assert file.exists(), f"{path.name} links to missing {target}"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file.read_text()), \
                f"{path.name} links to {target or path.name}#{anchor}, which has no such heading"


@pytest.mark.parametrize("page", PAGES)
def test_links_between_pages_resolve(page):
    _check_links(DOCS / page)


def test_links_from_the_readme_resolve():
    _check_links(ROOT / "README.md")


def test_only_existing_commands_are_documented():
    known = set(main.commands)
    for page in PAGES:
        unknown = mentioned_commands((DOCS / page).read_text()) - known
        assert not unknown, f"{page} documents commands that do not exist: {sorted(unknown)}"


def test_the_tutorial_goes_from_init_to_run_with_plots():
    commands = console_commands((DOCS / "tutorial.md").read_text())
    assert commands[0].startswith("predsim init ")
    assert any(c.startswith("predsim run ") and " --out " in c for c in commands)


def _workspace(tmp_path: Path) -> Path:
    for folder in ("scenarios", "schema"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


@pytest.mark.parametrize("page", [p for p in PAGES
                                  if console_commands((DOCS / p).read_text())])
def test_every_console_command_runs(page, tmp_path):
    cwd = _workspace(tmp_path)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PREDSIM_NO_PROGRESS": "1", "MPLBACKEND": "Agg"}
    env.pop("PREDSIM_DEBUG", None)
    for command in console_commands((DOCS / page).read_text()):
        result = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True,
                                text=True, stdin=subprocess.DEVNULL, timeout=300)
        assert result.returncode == 0, (f"{page}: `{command}` exited {result.returncode}\n"
                                        f"{result.stderr[-2000:]}")
        assert "Traceback" not in result.stderr, f"{page}: `{command}`\n{result.stderr}"
