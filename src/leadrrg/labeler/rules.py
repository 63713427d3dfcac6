"""The labelling engine: normalise a report, find mentions, decide each mention's polarity from the
cues in its clause, aggregate per observation the way CheXpert does (positive > uncertain >
negative > not mentioned), then apply the No Finding rule.

A mention's polarity comes from the nearest cue before it in its clause (negation, uncertainty or
double negation, the last counting as uncertainty) and, when there is none, from the nearest cue
after it within a few words. A clause ends at a sentence end or at a scope break ("but", "however",
"there is", a comma before a new finding, ...), so "no effusion, but a small pneumothorax" labels
effusion negative and pneumothorax positive.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from leadrrg.constants import NEGATIVE, NUM_OBSERVATIONS, OBSERVATIONS, POSITIVE, UNCERTAIN
from leadrrg.labeler import phrases

# Polarity ranks, aggregated with max(): positive beats uncertain beats negative.
_NONE, _NEG, _UNC, _POS = 0, 1, 2, 3
_DOUBLE = 4  # cue kind only: a double negation ("cannot be excluded"), labelled uncertain
_RANK_TO_VALUE = {_NEG: NEGATIVE, _UNC: UNCERTAIN, _POS: POSITIVE}

_INDEX = {name: i for i, name in enumerate(OBSERVATIONS)}
_NO_FINDING = _INDEX["No Finding"]
_SUPPORT_DEVICES = _INDEX["Support Devices"]
_OTHER = NUM_OBSERVATIONS  # slot for findings outside the 14 (only used by the No Finding rule)

_POST_WINDOW = 50  # characters between a mention and a cue after it
SENTENCE_CACHE_SIZE = 1 << 16  # labelled sentences kept (a few MB); see `_sentence_ranks`

# --- normalisation -----------------------------------------------------------------------------------

_DEID = re.compile(r"X{2,}")
_ANGLES = str.maketrans("<>", "  ")
_HEADER_TAIL = re.compile(
    r"(?:\b[A-Z][A-Z/&()-]*(?: [A-Z/&()-]+){0,5}|(?i:\b(?:findings|impression|indication|history|comparison|technique"
    r"|conclusion|examination|exam|clinical history|reason for exam(?:ination)?|recommendations?|notification"
    r"|addendum|final report|report|wet read|clinical information|clinical indication)))\s*$"
)
_NUMBER = re.compile(r"[0-9][0-9]?[.)](?![0-9])")
_SENTENCE_END = re.compile(r"\.(?![0-9])|[;!]|\?(?=\s+[A-Z])")
_NEWLINE = re.compile(r"\n")


def _drop_headers(text: str) -> str:
    """Section headers ("FINDINGS:", "Impression:") become sentence breaks; other colons stay."""
    parts = text.split(":")
    for i in range(len(parts) - 1):
        tail = parts[i][-60:]
        m = _HEADER_TAIL.search(tail)
        parts[i] = parts[i][: len(parts[i]) - len(tail) + m.start()] + "\n" if m else parts[i] + ":"
    return "".join(parts)


def _number_break(text: str):
    def replace(m: re.Match) -> str:
        i = m.start()
        return "\n" if i == 0 or text[i - 1] in " \n\t(" else m.group()

    return replace


def normalize(text: str) -> str:
    """Lower-cased report with one sentence per line; `XXXX` de-identification tokens become `xxxx`."""
    if "XX" in text:
        text = _DEID.sub(" xxxx ", text.translate(_ANGLES))
    if ":" in text:
        text = _drop_headers(text)
    text = _NUMBER.sub(_number_break(text), text)
    text = _SENTENCE_END.sub(lambda m: "?\n" if m.group() == "?" else "\n", text)
    # "?" is an uncertainty cue; as a word it sits behind a word boundary like the other cues
    text = text.lower().replace("?", " qmark ").replace(",", ", ")
    return "\n".join(" ".join(line.split()) for line in text.split("\n")).replace(" ,", ",")


# --- compiled patterns ---------------------------------------------------------------------------------


def _alternatives(source: str) -> list[str]:
    """Split a regex source at its top-level `|`."""
    parts, depth, in_class, escaped, start = [], 0, False, False, 0
    for i, ch in enumerate(source):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(source[start:i])
            start = i + 1
    parts.append(source[start:])
    return parts


def _compile(source: str) -> re.Pattern[str]:
    """Compile with one leading word boundary factored out of the alternatives: `\\b(?:a|b|...)` lets
    the regex engine skip non-matching positions several times faster than `\\ba|\\bb|...`."""
    alternatives = _alternatives(source)
    if all(a.startswith("\\b") for a in alternatives):
        source = "\\b(?:" + "|".join(a[2:] for a in alternatives) + ")"
    return re.compile(source)


def _mentions(name: str, include: str) -> str:
    """The mention regex of an observation; its weak mentions (`phrases.WEAK_MENTIONS`) join as the
    alternative ``\\b(?P<weak>...)``, so one scan finds both."""
    weak = phrases.WEAK_MENTIONS.get(name)
    return include if weak is None else rf"{include}|\b(?P<weak>{weak})\b"


# (observation, mention regex, exclusion regex or None)
_PLAIN = [
    (_INDEX[name], _compile(_mentions(name, include)), _compile(exclude) if exclude else None)
    for name, (include, exclude) in phrases.PLAIN_MENTIONS.items()
]
_PLAIN.append((_OTHER, _compile(phrases.OTHER_FINDINGS), None))


def _size_statement(anchor: str) -> re.Pattern[str]:
    status = rf"(?:(?P<neg>{phrases.STATUS_NEGATIVE})|(?P<unc>{phrases.STATUS_UNCERTAIN})|(?P<pos>{phrases.STATUS_POSITIVE}))"
    after = rf"\b{anchor}{phrases.gap(6)}{status}\b"
    before = rf"\b{status}(?: {phrases.WORD}){{0,2}}? {anchor}\b"
    return _compile(f"{after}|{before.replace('?P<', '?P<b_')}")


# anchor -> observations its size statements label (positive ones label only the first)
_SIZE = [
    (("heart", "cardi"), _size_statement(phrases.HEART_ANCHOR), (_INDEX["Cardiomegaly"],)),
    (("mediastin",), _size_statement(phrases.MEDIASTINUM_ANCHOR), (_INDEX["Enlarged Cardiomediastinum"],)),
]
_CARDIOMEDIASTINAL = _compile(r"cardiomediastinal")
_NEGATIVE_STATEMENTS = [(_INDEX[name], _compile(src)) for name, src in phrases.NEGATIVE_STATEMENTS.items()]

_DOUBLE_NEGATION = _compile(phrases.DOUBLE_NEGATION)
_PRE_NEGATION = _compile(phrases.PRE_NEGATION)
_POST_NEGATION = _compile(phrases.POST_NEGATION)
_PRE_UNCERTAINTY = _compile(phrases.PRE_UNCERTAINTY)
_PSEUDO_NEGATION = _compile(phrases.PSEUDO_NEGATION)
_PSEUDO_UNCERTAINTY = _compile(phrases.PSEUDO_UNCERTAINTY)
_POST_UNCERTAINTY = _compile(phrases.POST_UNCERTAINTY)
_SCOPE_BREAK = _compile(phrases.SCOPE_BREAK)
_SENTENCE_UNCERTAINTY = _compile(phrases.SENTENCE_UNCERTAINTY)


# --- cues ------------------------------------------------------------------------------------------------


class _Cues:
    """Cue spans of one normalised report, sorted, with the clause boundaries."""

    __slots__ = (
        "text", "pre_ends", "pre_kinds", "post_starts", "post_kinds", "break_starts", "break_ends", "hedged",
    )  # fmt: skip

    def __init__(self, text: str) -> None:
        self.text = text
        masked = [m.span() for m in _PSEUDO_NEGATION.finditer(text)]
        blocked = [m.span() for m in _DOUBLE_NEGATION.finditer(text)]
        pre = [(e, _DOUBLE) for _, e in blocked]
        post = [(s, _DOUBLE) for s, _ in blocked]
        unc_spans = blocked + masked
        if "indetermin" in text or "ncertain" in text or "undetermin" in text:  # cheap test first
            blocked += [m.span() for m in _PSEUDO_UNCERTAINTY.finditer(text)]
        for m in _PRE_UNCERTAINTY.finditer(text):
            if not _overlaps(m.span(), blocked):
                pre.append((m.end(), _UNC))
                unc_spans.append(m.span())
        for m in _POST_UNCERTAINTY.finditer(text):
            if not _overlaps(m.span(), blocked):
                post.append((m.start(), _UNC))
                unc_spans.append(m.span())
        for m in _PRE_NEGATION.finditer(text):
            if not _overlaps(m.span(), unc_spans):
                pre.append((m.end(), _NEG))
        for m in _POST_NEGATION.finditer(text):
            if not _overlaps(m.span(), unc_spans):
                post.append((m.start(), _NEG))
        # sorted by position; at equal positions uncertainty (larger rank) wins
        pre.sort()
        post.sort(key=lambda item: (item[0], -item[1]))
        self.pre_ends = [p for p, _ in pre]
        self.pre_kinds = [k for _, k in pre]
        self.post_starts = [p for p, _ in post]
        self.post_kinds = [k for _, k in post]
        breaks = [m.span() for m in _SCOPE_BREAK.finditer(text)]
        breaks.extend(m.span() for m in _NEWLINE.finditer(text))
        breaks.sort()
        self.break_starts = [s for s, _ in breaks]
        self.break_ends = sorted(e for _, e in breaks)
        # (start, end) of every sentence with a sentence-level hedge; usually none
        self.hedged = (
            [_line_span(text, m.start()) for m in _SENTENCE_UNCERTAINTY.finditer(text)]
            if "setting" in text or "context" in text or "scenario" in text
            else []
        )

    def polarity(self, start: int, end: int) -> int:
        """Polarity of a mention at text[start:end]."""
        rank = self._clause_polarity(start, end)
        if rank == _POS and any(s <= start < e for s, e in self.hedged):
            return _UNC
        return rank

    def _clause_polarity(self, start: int, end: int) -> int:
        """Polarity of a mention at text[start:end] from the cues of its clause."""
        i = bisect.bisect_right(self.break_ends, start)
        clause_start = self.break_ends[i - 1] if i else 0
        j = bisect.bisect_left(self.break_starts, end)
        clause_end = self.break_starts[j] if j < len(self.break_starts) else 1 << 30
        k = bisect.bisect_left(self.post_starts, end)
        post_kind = _NONE
        if k < len(self.post_starts):
            position = self.post_starts[k]
            if position < clause_end and position - end <= _POST_WINDOW:
                post_kind = self.post_kinds[k]
                if post_kind == _DOUBLE and position - end <= 25 and "," not in self.text[end:position]:
                    return _UNC  # "no pneumothorax, pneumonia cannot be excluded": the double negation is pneumonia's
        k = bisect.bisect_right(self.pre_ends, start)
        if k and self.pre_ends[k - 1] > clause_start:
            kind = self.pre_kinds[k - 1]
            if kind == _UNC:
                # a hedge inside a negated list ("no consolidation, suspicious opacity or definite
                # effusion") stays negated: the clause's earlier negation governs it
                while k > 1 and self.pre_ends[k - 2] > clause_start:
                    k -= 1
                    if self.pre_kinds[k - 1] == _NEG:
                        return _NEG
                    if self.pre_kinds[k - 1] == _DOUBLE:
                        break
            return _UNC if kind == _DOUBLE else kind
        if post_kind != _NONE:
            return _UNC if post_kind == _DOUBLE else post_kind
        return _POS


def _line_span(text: str, position: int) -> tuple[int, int]:
    """(start, end) of the normalised sentence (line) holding `position`."""
    end = text.find("\n", position)
    return text.rfind("\n", 0, position) + 1, len(text) if end < 0 else end


def _overlaps(span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    return any(s < span[1] and span[0] < e for s, e in spans)


# --- labelling ---------------------------------------------------------------------------------------------


def label_text(report: str) -> np.ndarray:
    """Labels of one report: (14,) float32, 1 / 0 / -1 / NaN."""
    labels = np.full(NUM_OBSERVATIONS, np.nan, dtype=np.float32)
    if not report or not report.strip():
        return labels
    ranks = [_NONE] * (NUM_OBSERVATIONS + 1)
    for line in normalize(report).split("\n"):
        if line:
            ranks = list(map(max, ranks, _sentence_ranks(line)))
    for index in range(NUM_OBSERVATIONS):
        if ranks[index] != _NONE:
            labels[index] = _RANK_TO_VALUE[ranks[index]]

    # No Finding (CheXpert): positive when nothing but Support Devices is positive or uncertain.
    findings = [r for i, r in enumerate(ranks) if i not in (_NO_FINDING, _SUPPORT_DEVICES)]
    if max(findings) < _UNC:
        labels[_NO_FINDING] = POSITIVE
    return labels


class Mention(NamedTuple):
    """One mention of an observation in a normalised sentence: `text[start:end]`, with its polarity rank."""

    index: int  # position in `constants.OBSERVATIONS`, or `OTHER` for a finding outside the 14
    rank: int  # NEGATIVE_RANK, UNCERTAIN_RANK or POSITIVE_RANK
    start: int
    end: int

    @property
    def asserted(self) -> bool:
        """Positive or uncertain: the sentence states the observation, possibly hedged."""
        return self.rank >= _UNC


OTHER = _OTHER
NEGATIVE_RANK, UNCERTAIN_RANK, POSITIVE_RANK = _NEG, _UNC, _POS


def sentence_mentions(text: str, *, first_positive_only: bool = False) -> list[Mention]:
    """Mentions of one normalised sentence (a line of `normalize`), in rule order: the plain mentions of
    each observation (`phrases.PLAIN_MENTIONS`, the `OTHER` findings included), then the heart and
    mediastinum size statements. Statements that only deny (`phrases.NEGATIVE_STATEMENTS`) are not
    mentions. With `first_positive_only`, an observation's plain mentions stop at its first positive
    one (enough for the labels, and faster)."""
    cues = None
    mentions: list[Mention] = []

    for index, include, exclude in _PLAIN:
        excluded = None
        for m in include.finditer(text):
            if exclude is not None:
                if excluded is None:
                    excluded = [e.span() for e in exclude.finditer(text)]
                if _overlaps(m.span(), excluded):
                    continue
            cues = cues or _Cues(text)
            rank = cues.polarity(*m.span())
            if rank == _POS and m.lastgroup == "weak":
                rank = _UNC  # a weak mention is at most uncertain
            mentions.append(Mention(index, rank, *m.span()))
            if rank == _POS and first_positive_only:
                break

    for keywords, pattern, targets in _SIZE:
        if not any(k in text for k in keywords):
            continue  # cheap test first: most sentences lack one of the anchors
        for m in pattern.finditer(text):
            groups = m.groupdict()
            if groups["neg"] or groups["b_neg"]:
                rank = _NEG
            elif groups["unc"] or groups["b_unc"]:
                rank = _UNC
            else:
                cues = cues or _Cues(text)
                rank = cues.polarity(*m.span())
                if rank == _POS and _PRE_UNCERTAINTY.search(m.group()):
                    rank = _UNC
            observations = targets
            if _CARDIOMEDIASTINAL.search(m.group()):
                # "cardiomediastinal silhouette": enlargement means the heart; normal means both normal
                observations = (_INDEX["Cardiomegaly"],) + (
                    (_INDEX["Enlarged Cardiomediastinum"],) if rank == _NEG else ()
                )
            mentions.extend(Mention(index, rank, *m.span()) for index in observations)
    return mentions


@functools.lru_cache(maxsize=SENTENCE_CACHE_SIZE)
def _sentence_ranks(text: str) -> tuple[int, ...]:
    """Polarity rank per observation (+ the `_OTHER` slot) of one normalised sentence.

    Every rule is local to a sentence: a clause ends at the newline that ends it, and no pattern matches a
    newline. A report's ranks are therefore the maximum of its sentences' ranks, and a sentence seen before
    (radiology reports repeat most of theirs: "No pneumothorax.") is labelled from the cache. The cues are
    found only for a sentence with a mention."""
    ranks = [_NONE] * (NUM_OBSERVATIONS + 1)
    for mention in sentence_mentions(text, first_positive_only=True):
        if mention.rank > ranks[mention.index]:
            ranks[mention.index] = mention.rank
    for index, pattern in _NEGATIVE_STATEMENTS:
        if ranks[index] == _NONE and pattern.search(text):
            ranks[index] = _NEG
    return tuple(ranks)


def report_defects(report: str) -> tuple[tuple[str, ...], int]:
    """(the observations the report asserts, positive or uncertain, in one sentence and denies in another, in
    CheXpert order; how many sentences repeat an earlier one after `normalize`): "large right pneumothorax. ... No
    pneumothorax." contradicts itself whichever way its experts read, and radiologists do not write a sentence
    twice. No Finding, which the labeler derives, is left out."""
    lines = [line for line in normalize(report).split("\n") if line]
    asserted, denied = set(), set()
    for line in lines:
        for index, rank in enumerate(_sentence_ranks(line)[:NUM_OBSERVATIONS]):
            if index != _NO_FINDING and rank >= _UNC:
                asserted.add(index)
            elif index != _NO_FINDING and rank == _NEG:
                denied.add(index)
    return tuple(OBSERVATIONS[i] for i in sorted(asserted & denied)), len(lines) - len(set(lines))


def label_reports(reports: Sequence[str]) -> np.ndarray:
    """Label reports. Returns (N, 14) float32 in `constants.OBSERVATIONS` order: 1.0 positive,
    0.0 negative, -1.0 uncertain, NaN not mentioned. An empty report is all NaN."""
    out = np.full((len(reports), NUM_OBSERVATIONS), np.nan, dtype=np.float32)
    for row, report in enumerate(reports):
        out[row] = label_text(report if isinstance(report, str) else "")
    return out
