"""The docs stay short where they must and point at things that exist.

The README is the front door (under 300 lines) and links to a design note per service, each under 150
lines; reference material lives in docs/ beside them. Every relative link (and #anchor) in the README,
DEVELOPERS.md and docs/ must resolve, every `make` target they name must be in the Makefile, and every
`CONDUIT_*` variable they name must be a setting or appear in the code or deployment files.

Links are found with one regular expression rather than a Markdown parser: the docs use only inline
links, and no Markdown library is among the dependencies; anchors follow GitHub's heading slugs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from demo.app import DemoSettings
from services.auth_proxy.settings import ProxySettings
from services.console.settings import ConsoleSettings
from services.importer.settings import ImporterSettings
from services.scheduler.settings import SchedulerSettings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DESIGN_NOTES = ["proxy", "tokens", "importer", "scheduler", "console"]
DOCS = [README, ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} (.+)$", re.MULTILINE)
_MAKE = re.compile(r"`make ([a-z][a-z-]*)")
_VARIABLE = re.compile(r"\bCONDUIT_[A-Z0-9_]*[A-Z0-9](?:_\*)?")  # CONDUIT_X_* names a family
# Where a variable the docs name may be read, besides the settings classes (tests are not: a name only
# a test uses is no setting).
_CODE = ["conduit", "services", "shared", "demo", "devtools", "bench"]
# Names the docs use as examples of a user's own variables, not Conduit's settings.
_EXAMPLES = ("CONDUIT_SECRET_",)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    plain = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", plain).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    slugs: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", _text(path))):
        slug, n = _slug(heading), 1
        while slug in slugs:  # GitHub numbers repeated headings: name, name-1, name-2
            slug = f"{_slug(heading)}-{n}"
            n += 1
        slugs.add(slug)
    return slugs


def _broken_links(path: Path) -> list[str]:
    broken = []
    for target in _LINK.findall(_FENCE.sub("", _text(path))):
        if re.match(r"[a-z][a-z+.-]*:", target):
            continue  # http:, https:, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading with that anchor")
    return broken


def test_the_readme_stays_under_300_lines() -> None:
    lines = len(_text(README).splitlines())
    assert lines < 300, f"README.md has {lines} lines; move reference material to docs/"


@pytest.mark.parametrize("note", DESIGN_NOTES)
def test_each_design_note_stays_under_150_lines_and_the_readme_links_to_it(note: str) -> None:
    path = ROOT / "docs" / f"{note}.md"
    lines = len(_text(path).splitlines())
    assert lines < 150, f"docs/{note}.md has {lines} lines; a design note says why, reference goes elsewhere"
    assert f"](docs/{note}.md)" in _text(README), f"README.md does not link to docs/{note}.md"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    assert _broken_links(path) == []


def test_a_missing_file_or_anchor_is_caught(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# A `code` heading: with (punctuation)\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md#a-code-heading-with-punctuation) [gone](missing.md) [bad](there.md#nope)\n"
        "```\n[in code](ignored.md)\n```\n[web](https://example.com/x.md)\n"
    )
    assert _broken_links(page) == ["missing.md: no such file", "there.md#nope: no heading with that anchor"]


def test_every_make_target_named_exists() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", _text(ROOT / "Makefile"), re.MULTILINE))
    named = {(path.name, target) for path in DOCS for target in _MAKE.findall(_text(path))}
    assert {(doc, target) for doc, target in named if target not in targets} == set()


def _settings_variables() -> set[str]:
    classes: list[type[BaseSettings]] = [
        ProxySettings,
        ImporterSettings,
        SchedulerSettings,
        ConsoleSettings,
        DemoSettings,
    ]
    return {f"{cls.model_config.get('env_prefix', '')}{name}".upper() for cls in classes for name in cls.model_fields}


def _known(name: str, known: set[str]) -> bool:
    if name.endswith("_*"):
        return any(k.startswith(name[:-1]) for k in known)
    return name in known


def test_every_variable_named_is_a_setting_or_in_the_code() -> None:
    known = _settings_variables()
    sources = [path for package in _CODE for path in (ROOT / package).rglob("*.py")]
    sources += [ROOT / "Makefile", ROOT / "docker-compose.yml", ROOT / ".env.example"]
    sources += [*(ROOT / "helm").rglob("*.yaml"), *(ROOT / "helm").rglob("*.tpl")]
    in_code = set()
    for source in sources:
        in_code.update(_VARIABLE.findall(source.read_text(encoding="utf-8", errors="replace")))
    unknown = {
        (path.name, name)
        for path in DOCS
        for name in _VARIABLE.findall(_text(path))
        if not _known(name, known | in_code) and not name.startswith(_EXAMPLES)
    }
    assert unknown == set()
