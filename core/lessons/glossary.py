"""The glossary: the words the pages use, explained in plain language. The text lives in
lessons/glossary.md (content a teacher edits, not code): one `## Term` heading per entry followed
by its explanation; anything before the first heading is the file's own preamble and is ignored.
No Streamlit here."""
from __future__ import annotations

import re
from pathlib import Path

from core.base import paths

GLOSSARY_FILE = paths.LESSONS_DIR / "glossary.md"
_HEADING = re.compile(r"^##\s+(.+?)\s*#*\s*$")


def parse_glossary(text: str, source: str = "glossary") -> dict[str, str]:
    """{term: explanation} in file order; ValueError for an entry without text or a repeated term."""
    entries: dict[str, str] = {}
    term, lines = None, []

    def close() -> None:
        if term is None:
            return
        body = " ".join(" ".join(lines).split())     # one paragraph: the file's line breaks are only wrapping
        if not body:
            raise ValueError(f"{source}: the entry {term!r} has no explanation")
        entries[term] = body

    for line in text.splitlines():
        m = _HEADING.match(line)
        if m:
            close()
            term, lines = m.group(1), []
            if term.lower() in (t.lower() for t in entries):
                raise ValueError(f"{source}: the term {term!r} appears twice")
        elif term is not None:
            lines.append(line.strip())
    close()
    if not entries:
        raise ValueError(f"{source}: no '## Term' entries")
    return entries


def load_glossary(path: Path | str = GLOSSARY_FILE) -> dict[str, str]:
    """The glossary file's entries, {term: explanation}, in file order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read the glossary {path}: {e.strerror or e}") from e
    return parse_glossary(text, source=path.name)


def search(entries: dict[str, str], query: str) -> dict[str, str]:
    """The entries whose term or explanation contains every word of `query` (case-insensitive);
    terms that match come first. An empty query keeps them all."""
    words = query.lower().split()
    if not words:
        return dict(entries)
    hits = {t: x for t, x in entries.items() if all(w in f"{t} {x}".lower() for w in words)}
    in_term = {t: x for t, x in hits.items() if all(w in t.lower() for w in words)}
    return {**in_term, **{t: x for t, x in hits.items() if t not in in_term}}
