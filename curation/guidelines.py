"""Review guidelines: what each reject reason means and what a "contemplative" answer is.

A default ships with the package (`curation/data/guidelines.md`); a workspace overrides it
with its own `guidelines.md`, which the team edits. The file is Markdown: one `## heading` per
term (each reject reason in `curation.responses.REASONS`, and "contemplative"), its definition
below it. The review app shows the definitions beside the item; `missing` names any term a
workspace's file leaves undefined, so an edit that drops one is noticed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from curation.errors import CurationError
from curation.files import atomic_write
from curation.responses import REASONS

GUIDELINES_FILE = "guidelines.md"
DEFAULT_GUIDELINES = Path(__file__).resolve().parent / "data" / GUIDELINES_FILE
CONTEMPLATIVE = "contemplative"
TERMS: tuple[str, ...] = (CONTEMPLATIVE, *REASONS)

_HEADING = re.compile(r"^##\s+(.+?)\s*$", re.MULTILINE)


class GuidelinesError(CurationError):
    """The guidelines file cannot be read."""


@dataclass(frozen=True)
class Guidelines:
    text: str  # the whole file
    sections: dict[str, str]  # term (heading, lower case) -> its definition
    path: Path
    is_default: bool  # the packaged default (the workspace has no guidelines.md)

    @property
    def missing(self) -> list[str]:
        """Terms the file does not define."""
        return [term for term in TERMS if term not in self.sections]

    def definition(self, term: str) -> str | None:
        return self.sections.get(term.casefold())

    def summary(self, term: str) -> str | None:
        """The definition's first sentence: what fits beside the item."""
        definition = self.definition(term)
        if definition is None:
            return None
        flat = " ".join(definition.split())
        end = re.search(r"[.!?](\s|$)", flat)
        return flat[: end.end()].strip() if end else flat


def parse_guidelines(text: str) -> dict[str, str]:
    """`## term` headings and the text under each, up to the next heading."""
    headings = list(_HEADING.finditer(text))
    sections = {}
    for index, heading in enumerate(headings):
        end = headings[index + 1].start() if index + 1 < len(headings) else len(text)
        sections[heading.group(1).strip().casefold()] = text[heading.end():end].strip()
    return sections


def load_guidelines(root: str | os.PathLike[str] | None) -> Guidelines:
    """The workspace's guidelines.md, else the packaged default."""
    own = Path(root) / GUIDELINES_FILE if root is not None else None
    path = own if own is not None and own.exists() else DEFAULT_GUIDELINES
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise GuidelinesError(f"{path}: cannot read the guidelines: {error}") from None
    return Guidelines(text, parse_guidelines(text), path, is_default=path == DEFAULT_GUIDELINES)


def write_default_guidelines(root: str | os.PathLike[str]) -> tuple[Path, bool]:
    """Copy the default into the workspace for the team to edit; never overwrites. (path, whether written)."""
    path = Path(root) / GUIDELINES_FILE
    if path.exists():
        return path, False
    atomic_write(path, DEFAULT_GUIDELINES.read_bytes())
    return path, True
