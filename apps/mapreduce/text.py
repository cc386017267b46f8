"""Words: maximal runs of letters, exactly as ``str.isalpha`` defines a letter."""

from __future__ import annotations

import re

# Every letter is a word character that is neither a decimal digit nor "_",
# so each run of letters lies inside one match of this pattern; the pattern
# also admits a few non-letters (superscript digits, vulgar fractions,
# letter-like numerals), which the exact split below removes.
_CANDIDATES = re.compile(r"[^\W\d_]+")


def words(text: str) -> list[str]:
    out: list[str] = []
    for run in _CANDIDATES.findall(text):
        if run.isalpha():
            out.append(run)
            continue
        start = None
        for i, ch in enumerate(run):
            if ch.isalpha():
                if start is None:
                    start = i
            elif start is not None:
                out.append(run[start:i])
                start = None
        if start is not None:
            out.append(run[start:])
    return out
