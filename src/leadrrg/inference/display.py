"""A report in display form, for people: sentence case, punctuation attached, one space between words.

    display_report("the heart is normal in size . no effusion , no pneumothorax")
    -> "The heart is normal in size. No effusion, no pneumothorax."

Models and metrics keep the normalised form (R2Gen's: lower case, punctuation as separate words), so a result's
`report` and every prediction file hold the model's text; `report_display` and the page show this form.
`display_pieces` does the same per generated token, so the page can shade each word and still read as prose:
joining its pieces gives `display_report` of the joined text. Pure functions of text: no tokenizer, no model.
"""

from __future__ import annotations

from collections.abc import Sequence

ATTACH_LEFT = frozenset(".,;:?!)]")  # no space before these
ATTACH_RIGHT = frozenset("([")  # no space after these
SENTENCE_END = frozenset(".?!")


def display_report(text: str) -> str:
    """`text` (a model's normalised report) in display form; "" stays ""."""
    return "".join(display_pieces([text]))


def display_pieces(pieces: Sequence[str]) -> list[str]:
    """Each piece of a report (its tokens' texts, in order) in display form, so that
    "".join(display_pieces(pieces)) == display_report("".join(pieces)). A piece may become "" (a space that
    punctuation absorbed); the closing period, when the report lacks one, joins the last piece with text."""
    text = "".join(pieces)
    owner = [index for index, piece in enumerate(pieces) for _ in piece]  # the piece each character is from
    shown = _display_chars(text)
    out = [""] * len(pieces)
    for position, char in enumerate(shown):
        out[owner[position]] += char
    kept = "".join(shown).rstrip()
    if any(c.isalnum() for c in kept) and kept[-1] not in SENTENCE_END:
        last = max(owner[i] for i, char in enumerate(shown) if char and not char.isspace())
        out[last] += "."
    return out


def _display_chars(text: str) -> list[str]:
    """Per character of `text`: "" (dropped), " " (a kept space) or the character, sentence-cased."""
    shown = [""] * len(text)
    previous = ""  # the last kept character that is not a space
    sentence_start = True
    for i, char in enumerate(text):
        if char.isspace():
            following = _next_visible(text, i)
            run = i > 0 and text[i - 1].isspace()  # a run of spaces keeps at most its first
            dropped = run or not previous or following is None  # runs, leading and trailing spaces
            if not (dropped or following in ATTACH_LEFT or previous in ATTACH_RIGHT):
                shown[i] = " "
            continue
        if char in SENTENCE_END and previous in SENTENCE_END:
            continue  # "no effusion . ." -> "No effusion."
        if sentence_start and char.isalpha():
            char, sentence_start = char.upper(), False
        elif char in SENTENCE_END:
            sentence_start = True
        elif char.isalnum():
            sentence_start = False
        shown[i], previous = char, char
    return shown


def _next_visible(text: str, start: int) -> str | None:
    for char in text[start:]:
        if not char.isspace():
            return char
    return None
