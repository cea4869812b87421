"""Untrusted text: how it is shown on a terminal, and how it is compared.

Strings typed by a user, written by a language model or sent by the cloud are data, never instructions to the
terminal or to the scrubber:

- `printable` neutralises what a terminal would act on: control characters (C0, DEL, C1, so the escape
  sequences `\\x1b[2J` or `\\x1b]0;title\\x07` can neither clear the screen nor retitle the window), bidi
  overrides and isolates (text that displays in another order than it reads), line and paragraph separators.
  Each is shown as a visible escape (`\\x1b`, `\\u202e`). Rich markup is a separate matter: untrusted text
  reaches rich only as `rich.text.Text` (see `tandem.views.safe`), which rich never parses as markup.
- `normalize_for_matching` folds the disguises a title can wear to slip past a detector: compatibility forms
  (Unicode NFKC: fullwidth `Ｔｏｙ`, mathematical `𝐓𝐨𝐲`, ligatures), invisible format characters (zero-width
  space/joiners, soft hyphen, word joiner, BOM, bidi marks) and the common Cyrillic/Greek/Armenian letters that
  look like Latin ones (`Тоу Ѕtоrу`); `skeleton` folds every look-alike, one character for one, for matching.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_SEPARATORS = frozenset("\u2028\u2029\u0085")


def _escape(char: str) -> str:
    if char in "\n\r":
        return "\\n" if char == "\n" else "\\r"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _unsafe(char: str, multiline: bool) -> bool:
    if char == "\n":
        return not multiline
    if char == "\t":
        return False
    return unicodedata.category(char) == "Cc" or char in _BIDI or char in _SEPARATORS


def printable(text: object, *, multiline: bool = True, limit: int | None = None) -> str:
    """`text` as a string safe to write to a terminal: control, bidi and separator characters shown as escapes.

    With `multiline=False` newlines are escaped too (a one-line message stays one line). `limit` cuts the
    result to that many characters, marking the cut with an ellipsis.
    """
    text = str(text)
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 1, 0)] + "…"
    if all(char.isprintable() or char in "\n\t" for char in text) and (multiline or "\n" not in text):
        return text  # the common case: nothing to neutralise (isprintable is False for every unsafe character)
    return "".join(_escape(char) if _unsafe(char, multiline) else char for char in text)


def one_line(text: object, limit: int | None = 2000) -> str:
    """A message made safe and folded onto one line: its non-empty lines joined with " | "."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return printable(" | ".join(lines), multiline=False, limit=limit)


# Letters of other scripts drawn like Latin ones (after NFKC), folded to the Latin letter they imitate.
CONFUSABLES: dict[str, str] = {
    # Cyrillic
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J", "Ү": "Y", "Ӏ": "l", "Ԛ": "Q", "Ԝ": "W", "Ԁ": "D",
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j",
    "ԁ": "d", "һ": "h", "ԛ": "q", "ԝ": "w", "ү": "y", "ӏ": "l", "к": "k", "ё": "ë", "ї": "ï",
    # Greek
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "ο": "o", "ν": "v", "ρ": "p", "α": "a", "ι": "i", "κ": "k",
    "υ": "u", "χ": "x", "γ": "y", "ϲ": "c", "ϳ": "j", "Ϲ": "C",
    # Armenian, Latin extensions
    "օ": "o", "ս": "u", "հ": "h", "ı": "i", "ȷ": "j", "ɡ": "g", "ɑ": "a", "ʏ": "y", "ꓲ": "I",
}  # fmt: skip
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_FOLD = str.maketrans(CONFUSABLES)
assert all(len(latin) == 1 for latin in CONFUSABLES.values())  # one for one: skeleton keeps every position


def _invisible(char: str) -> bool:
    """Format characters (zero-width space and joiners, soft hyphen, word joiner, BOM, bidi marks), the
    combining grapheme joiner and variation selectors: they change nothing a reader sees."""
    code = ord(char)
    selector = 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF
    return unicodedata.category(char) == "Cf" or code == 0x034F or selector


def _fold_mixed_word(match: re.Match[str]) -> str:
    word = match.group(0)
    if any("a" <= c.lower() <= "z" for c in word):
        return "".join(CONFUSABLES.get(c, c) for c in word)
    return word


@lru_cache(maxsize=1 << 16)  # pure; the scrubber normalises the same catalogue titles for every abstract
def normalize_for_matching(text: str) -> str:
    """The text a detector should work on: NFKC, invisible characters removed, and look-alike letters folded in
    words that also hold Latin letters (`Ѕtаr` -> `Star`: no real word mixes scripts). A word written wholly
    in another script stays as written (`как`); `skeleton` folds those too, for detection only.
    """
    text = unicodedata.normalize("NFKC", text)
    text = "".join(char for char in text if not _invisible(char))
    return _WORD.sub(_fold_mixed_word, text)


def skeleton(text: str) -> str:
    """Every look-alike letter folded to the Latin one it imitates: same length as `text`, character for
    character, so a match found in the skeleton is at the same place in the text (`Тоу` -> `Toy`)."""
    return text.translate(_FOLD)


def replace_in_skeleton(pattern: re.Pattern[str], text: str, value: str) -> tuple[str, int]:
    """Replace by `value` each span of `text` whose skeleton matches `pattern`; (new text, replacements)."""
    parts, last, found = [], 0, 0
    for match in pattern.finditer(skeleton(text)):
        parts += [text[last : match.start()], value]
        last, found = match.end(), found + 1
    return "".join(parts) + text[last:], found
