"""Deterministic text for tests and benchmarks: several scripts, digits, punctuation, odd files.

Words come from a fixed vocabulary built from a seed (Latin with and without
accents, Greek, Cyrillic, CJK); lines mix them with numbers and punctuation.
Files get different sizes; with eight files they take the names of the lab's
eight books. One file is empty, one holds bytes that are not UTF-8.
"""

from __future__ import annotations

import random
from pathlib import Path

_ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyz",
    "abcdefghijklmnopqrstuvwxyzéèêàçñöüß",
    "αβγδεζηθικλμνξοπρστυφχψω",
    "абвгдежзийклмнопрстуфхцчшщыэюя",
    "日本語文字漢字中国",
]
_PUNCTUATION = [" ", " ", " ", " ", ", ", ". ", "; ", " - ", "'", "_", " (", ") ", "!", "? ", ":"]
BOOK_NAMES = [
    "being_ernest", "dorian_gray", "frankenstein", "grimm",
    "huckleberry_finn", "metamorphosis", "sherlock_holmes", "tom_sawyer",
]


def _vocabulary(rng: random.Random, size: int = 4000) -> list[str]:
    words = []
    for _ in range(size):
        alphabet = rng.choices(_ALPHABETS, weights=[70, 12, 6, 6, 6])[0]
        word = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10)))
        words.append(word.capitalize() if rng.random() < 0.1 else word)
    return words


def _lines(rng: random.Random, vocab: list[str], count: int = 3000) -> list[str]:
    lines = []
    weights = [1.0 / (i + 1) for i in range(len(vocab))]  # a few words common, most rare, as in prose
    for _ in range(count):
        parts = []
        for word in rng.choices(vocab, weights=weights, k=rng.randint(3, 16)):
            parts.append(word)
            parts.append(rng.choice(_PUNCTUATION) if rng.random() < 0.8 else f" {rng.randint(0, 9999)} ")
        lines.append("".join(parts).strip() + "\n")
    return lines


def generate_corpus(directory: str | Path, *, total_bytes: int, n_files: int, seed: int) -> list[Path]:
    """Write ``n_files`` files of about ``total_bytes`` in all into ``directory``; returns their paths."""
    if n_files < 2:
        raise ValueError("a corpus needs at least 2 files (one is always empty)")
    rng = random.Random(seed)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    vocab = _vocabulary(rng)
    lines = _lines(rng, vocab)
    names = [f"pg-{n}.txt" for n in BOOK_NAMES] if n_files == len(BOOK_NAMES) else [f"pg-part-{i:03d}.txt" for i in range(n_files)]
    weights = [rng.uniform(0.3, 1.0) for _ in range(n_files - 1)]
    scale = total_bytes / sum(weights)
    empty = rng.randrange(n_files)
    paths = []
    sized = iter(weights)
    for i, name in enumerate(names):
        path = out / name
        paths.append(path)
        if i == empty:
            path.write_bytes(b"")
            continue
        target = int(next(sized) * scale)
        avg = sum(len(line.encode()) for line in lines[:200]) / 200
        chosen = rng.choices(lines, k=max(1, int(target / avg)))
        data = "".join(chosen).encode("utf-8")
        if i == (empty + 1) % n_files:
            data = data[: len(data) // 2] + b"\xff\xfe broken \xc3 bytes \x80" + data[len(data) // 2 :]
        path.write_bytes(data)
    return paths
