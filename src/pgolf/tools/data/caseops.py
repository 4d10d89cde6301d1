"""CaseOps: lossless case factoring of text before tokenisation (sota-stack §2.1, PR #1729).

Text is lowercased and the case is moved into four reserved private-use operator characters, which
the tokenizer registers as user-defined pieces:

* ``TITLE`` (U+E001) before a word whose first letter is upper case and the rest is not;
* ``ALLCAPS`` (U+E002) before a word of two or more letters, all upper case;
* ``CAPNEXT`` (U+E003) before one upper-case letter inside any other word;
* ``ESC`` (U+E004) before a character that must be read literally: an operator character of the
  original text.

A word is a maximal run of ``str.isalpha`` characters. Only "simple" letters are case-factored:
those whose lower case is one character of the same UTF-8 length that maps back to the letter by
``str.upper`` (so every encoded character stands for exactly one original character of the same
byte length, which is what the per-token byte sidecar of the validation set counts). Any other
letter (e.g. U+0130, whose lower case is two characters) is kept as it is, and a word holding one
is not title- or all-caps-factored. ``decode(encode(text)) == text`` for every string.

``encode_with_bytes`` also returns, per encoded character, the UTF-8 bytes of the original text it
stands for: 0 for an inserted operator, the character's own length otherwise.
"""

from __future__ import annotations

from pgolf.data.sidecar import OPERATORS

CASEOPS_VERSION = "pgolf-caseops-v1"
TITLE, ALLCAPS, CAPNEXT, ESC = OPERATORS


def _simple_upper(c: str) -> bool:
    """An upper-case letter whose one-character lower case of the same UTF-8 length maps back to it."""
    low = c.lower()
    return low != c and len(low) == 1 and low.upper() == c and len(low.encode()) == len(c.encode())


def _unchanged_by_lower(c: str) -> bool:
    return c.lower() == c


def _words(text: str) -> list[tuple[str, bool]]:
    """The text cut into (run, is_word) pieces: maximal runs of alphabetic characters, and the rest."""
    out: list[tuple[str, bool]] = []
    i = 0
    while i < len(text):
        j = i + 1
        alpha = text[i].isalpha()
        while j < len(text) and text[j].isalpha() == alpha:
            j += 1
        out.append((text[i:j], alpha))
        i = j
    return out


def _encode_word(word: str) -> list[tuple[str, int]]:
    """(encoded character, original bytes) for one word."""
    n = [len(c.encode()) for c in word]
    if len(word) >= 2 and all(_simple_upper(c) for c in word):
        return [(ALLCAPS, 0)] + [(c.lower(), b) for c, b in zip(word, n, strict=True)]
    if _simple_upper(word[0]) and all(_unchanged_by_lower(c) for c in word[1:]):
        return [(TITLE, 0), (word[0].lower(), n[0]), *zip(word[1:], n[1:], strict=True)]
    out: list[tuple[str, int]] = []
    for c, b in zip(word, n, strict=True):
        out += [(CAPNEXT, 0), (c.lower(), b)] if _simple_upper(c) else [(c, b)]
    return out


def encode_with_bytes(text: str) -> tuple[str, list[int]]:
    """The CaseOps form of ``text`` and, per character of it, the original UTF-8 bytes it stands for."""
    chars: list[tuple[str, int]] = []
    for run, is_word in _words(text):
        if is_word:
            chars += _encode_word(run)
            continue
        for c in run:
            chars += [(ESC, 0), (c, len(c.encode()))] if c in OPERATORS else [(c, len(c.encode()))]
    return "".join(c for c, _ in chars), [b for _, b in chars]


def encode(text: str) -> str:
    return encode_with_bytes(text)[0]


def decode(encoded: str) -> str:
    """The inverse of ``encode``. A lone operator at the end, or one not followed by what it applies
    to, cannot come out of ``encode``; it decodes to nothing."""
    out: list[str] = []
    i, n = 0, len(encoded)
    while i < n:
        c = encoded[i]
        if c == ESC:
            out.append(encoded[i + 1 : i + 2])
            i += 2
        elif c == CAPNEXT:
            out.append(encoded[i + 1 : i + 2].upper())
            i += 2
        elif c in (TITLE, ALLCAPS):
            j = i + 1
            while j < n and encoded[j].isalpha():
                j += 1
            word = encoded[i + 1 : j]
            out.append(word.upper() if c == ALLCAPS else word[:1].upper() + word[1:])
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)
