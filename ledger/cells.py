"""Spreadsheet-safe cells: the `'` that export puts before a cell a spreadsheet would execute,
and the inverse that ingest applies, so that a file ledger wrote reads back as it was.

A cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return (other than a plain E.164
number) is written with a leading `'` (SPEC section 5). Reading strips one `'` from a cell whose
`'`s are followed by one of those characters. For the two to be exact inverses, a cell that
itself starts with such a `'` (`'-Bo`) gets one more on writing (`''-Bo`).
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_FIRST = frozenset(FORMULA_STARTS)


def is_plain_e164(text: str) -> bool:
    # ASCII digits only: str.isdigit() also accepts superscripts and Arabic-Indic digits.
    digits = text[1:]
    return text.startswith("+") and 8 <= len(digits) <= 15 and digits.isascii() and digits.isdigit()


def _reads_as_guarded(text: str) -> bool:
    """True when `text` is one or more `'` followed by a character a spreadsheet executes."""
    return text.startswith("'") and text.lstrip("'")[:1] in _FORMULA_FIRST


def neutralise(value: object) -> str:
    """The cell as text, with a leading `'` where a spreadsheet would execute it."""
    if value is None:
        return ""
    text = str(value)
    if not text:
        return text
    first = text[0]
    if (first in _FORMULA_FIRST and not is_plain_e164(text)) or (
        first == "'" and _reads_as_guarded(text)
    ):
        return "'" + text
    return text


def restore(cell: str) -> str:
    """The cell `neutralise` was given, from what it wrote: one guarding `'` fewer."""
    return cell[1:] if _reads_as_guarded(cell) else cell
