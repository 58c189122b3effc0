"""Every relative link in the repository's Markdown points at something inside the repository.

For each tracked ``*.md`` file (``git ls-files '*.md'``), every link target that is not a URL —
inline links and images ``[text](target)``, reference definitions ``[id]: target``, and
``href``/``src`` attributes of inline HTML — must name a tracked file or a folder holding one,
resolved from the linking file's folder (``/…`` from the repository root, as GitHub does). A
target that climbs out of the repository (``../../shared/DESIGN.md`` from ``README.md``) fails.
An ``#anchor`` into a Markdown file (or into the linking file itself) must match one of its
headings by GitHub's slug rules, or an explicit ``<a name=…>``/``id=…``. ``http(s)`` and
``mailto`` links are not checked; any other URL scheme fails (it cannot be followed from a
clone). Links inside fenced code blocks and inline code are not links and are ignored.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[2]

UNCHECKED_SCHEMES = ("http://", "https://", "mailto:")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target) and ![alt](target); the text may hold one level of brackets (e.g. a badge)
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]"  # [text] or ![alt]
    r"\(\s*(<[^>]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)"  # (target, balanced parentheses allowed
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)"  # optional "title")
)
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']*)[\"']", re.IGNORECASE)
HTML_ANCHOR = re.compile(r"<a\b[^>]*?\b(?:name|id)\s*=\s*[\"']([^\"']*)[\"']|\bid\s*=\s*[\"']([^\"']*)[\"']", re.IGNORECASE)
ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)\s*$")


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout
    return [p for p in out.decode().split("\0") if p]


def tracked_markdown() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "*.md"], cwd=REPO, check=True, capture_output=True).stdout
    return sorted(p for p in out.decode().split("\0") if p)


@cache
def repository_paths() -> frozenset[str]:
    """Every tracked file and every folder that holds one, relative to the root ('' = the root)."""
    paths: set[str] = {""}
    for file in tracked_files():
        parts = PurePosixPath(file).parts
        for i in range(1, len(parts) + 1):
            paths.add("/".join(parts[:i]))
    return frozenset(paths)


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code removed."""
    lines: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if fence is not None:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = None
            continue
        if match:
            fence = match.group(1)
            continue
        lines.append((number, INLINE_CODE.sub("", line)))
    return lines


def link_targets(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link in a Markdown text."""
    targets: list[tuple[int, str]] = []
    for number, line in prose_lines(text):
        for pattern in (INLINE_LINK, REFERENCE_DEFINITION, HTML_LINK):
            for match in pattern.finditer(line):
                target = match.group(1).strip()
                if target.startswith("<") and target.endswith(">"):
                    target = target[1:-1]
                targets.append((number, target))
    return targets


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text lower-cased, punctuation dropped, spaces → '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")  # drops `, *, punctuation
    return text.replace(" ", "-")


def anchors_of(text: str) -> frozenset[str]:
    """Every anchor a Markdown text defines: heading slugs (duplicates numbered) and HTML ids."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    previous = ""
    for _, line in prose_lines_with_code_headings(text):
        heading = None
        match = ATX_HEADING.match(line)
        if match:
            heading = match.group(2)
        elif previous.strip() and SETEXT_UNDERLINE.match(line) and not previous.lstrip().startswith(("|", "-", "*", "#")):
            heading = previous.strip()
        if heading is not None:
            slug = github_slug(heading)
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
        for html in HTML_ANCHOR.finditer(line):
            anchors.add(html.group(1) or html.group(2))
        previous = line
    return frozenset(anchors)


def prose_lines_with_code_headings(text: str) -> list[tuple[int, str]]:
    """Lines outside fenced code blocks, inline code kept (a heading's code spans are part of its slug)."""
    lines: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if fence is not None:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = None
            continue
        if match:
            fence = match.group(1)
            continue
        lines.append((number, line))
    return lines


@cache
def anchors_of_file(path: str) -> frozenset[str]:
    return anchors_of((REPO / path).read_text(encoding="utf-8"))


def problem_of(source: str, target: str, paths: frozenset[str]) -> str | None:
    """Why a link from the tracked file ``source`` to ``target`` is broken, or None."""
    if target.lower().startswith(UNCHECKED_SCHEMES):
        return None
    if SCHEME.match(target):
        return "a URL scheme that cannot be followed from a clone"
    path_part, _, anchor = target.partition("#")
    path_part = unquote(path_part.split("?", 1)[0])
    if not path_part:
        resolved = source
    else:
        base = PurePosixPath() if path_part.startswith("/") else PurePosixPath(source).parent
        parts: list[str] = []
        for part in (base / path_part.lstrip("/")).parts:
            if part == "..":
                if not parts:
                    return "points outside the repository"
                parts.pop()
            elif part != ".":
                parts.append(part)
        resolved = "/".join(parts)
        if resolved not in paths:
            return f"{resolved or '/'} is not in the repository"
    if anchor and resolved.endswith(".md") and resolved in paths and unquote(anchor) not in anchors_of_file(resolved):
        return f"no heading #{anchor} in {resolved}"
    return None


@pytest.mark.parametrize("markdown", tracked_markdown())
def test_every_relative_link_resolves_inside_the_repository(markdown: str) -> None:
    paths = repository_paths()
    text = (REPO / markdown).read_text(encoding="utf-8")
    broken = [
        f"{markdown}:{line}: ({target}) {problem}"
        for line, target in link_targets(text)
        if (problem := problem_of(markdown, target, paths)) is not None
    ]
    assert broken == []


def test_the_repository_has_markdown_to_check() -> None:
    assert "README.md" in tracked_markdown()


# ---- the checker itself: it must find what it is meant to find ----

FAKE_PATHS = frozenset({"", "README.md", "docs", "docs/a.md", "services", "services/x", "services/x/README.md"})


@pytest.mark.parametrize(
    ("source", "target", "problem"),
    [
        ("README.md", "docs/a.md", None),
        ("README.md", "./docs/", None),
        ("README.md", "services/x", None),
        ("services/x/README.md", "../../docs/a.md", None),
        ("services/x/README.md", "/docs/a.md", None),
        ("README.md", "https://example.com/nowhere", None),
        ("README.md", "mailto:someone@example.com", None),
        ("README.md", "docs/b.md", "docs/b.md is not in the repository"),
        ("README.md", "../shared/DESIGN.md", "points outside the repository"),
        ("services/x/README.md", "../../../shared/DESIGN.md", "points outside the repository"),
        ("README.md", "file:///etc/passwd", "a URL scheme that cannot be followed from a clone"),
    ],
)
def test_links_are_resolved_like_github_does(source: str, target: str, problem: str | None) -> None:
    assert problem_of(source, target, FAKE_PATHS) == problem


def test_link_targets_skip_code_and_read_every_link_form() -> None:
    text = "\n".join(
        [
            'See [the docs](docs/a.md) and ![a picture](img/p.png "title").',
            "`[not a link](inline/code.md)` but [a link with (parens)](x_(y).md).",
            "```",
            "[in a fence](fenced.md)",
            "```",
            "[ref]: <docs/with space.md>",
            '<a href="html/link.md">x</a>',
            "[anchor only](#a-heading)",
        ]
    )
    assert [t for _, t in link_targets(text)] == [
        "docs/a.md",
        "img/p.png",
        "x_(y).md",
        "docs/with space.md",
        "html/link.md",
        "#a-heading",
    ]


def test_heading_slugs_follow_github() -> None:
    text = "\n".join(
        [
            "# Product-view analytics pipeline",
            "## Source resets: an incident, never a silent skip",
            "## Settings (`bridge/settings.py`, env prefix `BRIDGE_`)",
            "## What is *and* is not proven here",
            "## Numbers",
            "## Numbers",
            "```",
            "# not a heading",
            "```",
            "Setext heading",
            "--------------",
            '<a name="custom-anchor"></a>',
        ]
    )
    assert anchors_of(text) == {
        "product-view-analytics-pipeline",
        "source-resets-an-incident-never-a-silent-skip",
        "settings-bridgesettingspy-env-prefix-bridge_",
        "what-is-and-is-not-proven-here",
        "numbers",
        "numbers-1",
        "setext-heading",
        "custom-anchor",
    }


def test_a_missing_anchor_is_reported() -> None:
    # anchors are read from the real file: README.md has a first-level heading, no "#no-such-heading"
    assert problem_of("docs/x.md", "../README.md#no-such-heading", repository_paths()) == "no heading #no-such-heading in README.md"
