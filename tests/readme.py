"""The README's examples as tests see them: fenced blocks after ``<!-- example: NAME -->``."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
README_CASE = re.compile(r"0012345(\d)")


def example(name: str) -> str:
    """The body of the fenced code block that follows ``<!-- example: name -->``."""
    text = README.read_text(encoding="utf-8")
    marker = f"<!-- example: {name} -->"
    start = text.index(marker)
    fence = text.index("```", start)
    body = text.index("\n", fence) + 1
    return text[body : text.index("```", body)]


def commands(block: str) -> list[str]:
    """Shell lines, with backslash continuations joined."""
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]


def with_cases(text: str, prefix: str) -> str:
    """The README's case numbers (00123456, 00123457) made this test's own."""
    return README_CASE.sub(lambda m: f"{prefix}{m[1]}", text)


def queries() -> list[str]:
    """The ready-made visibility queries of "Inspecting cases in the Temporal UI"."""
    text = README.read_text(encoding="utf-8")
    table = text[text.index("<!-- queries -->") :].split("\n\n", 1)[0]
    found = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[1].startswith("`") and cells[1].endswith("`"):
            found.append(cells[1].strip("`"))
    return found
