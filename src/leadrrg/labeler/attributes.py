"""Side, severity and zone of every asserted observation, sentence-local like the labels (no torch).

`label_attributes(reports)` returns, per report, a CheXpert-style dict of the observations the report
asserts (positive or uncertain, exactly those `label_reports` marks 1 or -1, No Finding aside):

    {"Pleural Effusion": {"side": "right", "severity": "mild", "zone": "lower"}, ...}

- **side** is the patient's side as the report states it: `right`, `left`, `bilateral`, or None when no
  sentence asserting the observation states one. "bilateral(ly)", "both lungs / bases / ...",
  "bibasilar", "biapical", "right and left" are bilateral; "lingula" is left, "middle lobe" right.
  Cardiomegaly and Enlarged Cardiomediastinum have no side (a side word near them names a chamber).
  Words comparing ("opacity of the right base compared to the left") name no side.
- **severity** maps the report's size words: small / tiny / minimal / trace / slight / minor / mild ->
  `mild`; moderate / medium -> `moderate`; large / extensive / massive / severe / marked / huge ->
  `large`; None when none is stated. Adverbs count ("mildly enlarged"); words describing a change
  ("slightly increased", "markedly improved") and lung volumes ("small lung volumes") do not. "Large"
  grades no heart or mediastinum ("large heart" is enlarged: None; "moderately large heart" is moderate),
  and Support Devices have no severity.
- **zone**: `upper` (upper lobe / lung / zone, apex, apical), `middle` (middle lobe, mid lung, lingula),
  `lower` (lower lobe / lung / zone, base, basilar, retrocardiac), several joined by "+" in that order
  ("upper+lower"), or None.

How a word finds its observation. The sentences, their normalisation, the mentions and their polarity
are the rule labeler's (`rules.normalize`, `rules.sentence_mentions`); this module adds no mention
finder. Every mention of a sentence (negated ones and findings outside the 14 included, so that "no
left effusion" or "elevated right hemidiaphragm" keep their side words to themselves) competes for
the sentence's attribute words; a word belongs to
1. the mention whose text holds it ("heart is mildly enlarged");
2. after a preposition ("in the left lower lobe", "on the right"): the mention before it, else the
   one after it ("at the left base, there is atelectasis");
3. else, as a modifier, the next mention within six words when no verb, preposition, negation or
   hedge lies between ("small right pleural effusion", "moderate to large left-sided effusion"), and
   the mentions right after that one ("right basilar subsegmental atelectasis", "small calcified nodule");
4. else the mention before it within ten words ("the effusion is small", "opacities bilaterally");
5. else the next mention of the sentence, if no word of the same kind lies between.
A mention linked to the one before it by "or", "/", "versus", "may represent", "consistent with",
"concerning for", ... (within ten words, no negation or new statement between) takes that one's side and
zone when it states none ("right lower lobe opacity, likely atelectasis"; "consolidation with air
bronchograms in the left base, concerning for pneumonia"), and gives its own after-words back
("atelectasis or consolidation in the left base"); severity is not shared.

Aggregation. A mention with both sides ("right greater than left pleural effusions", "small right and
moderate left effusions") is bilateral; over the sentences of a report, an observation whose asserted
mentions state different sides is bilateral (right in one sentence and left in another, or bilateral in
any). Severity takes the largest size stated ("mild to moderate" -> moderate, "moderately large" -> large,
"small right, large left" -> large); zones are the union.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from leadrrg.constants import OBSERVATIONS, SEVERITIES
from leadrrg.labeler.rules import OTHER, Mention, normalize, sentence_mentions

ZONES: tuple[str, ...] = ("upper", "middle", "lower")
ATTRIBUTES: tuple[str, ...] = ("side", "severity", "zone")

# Observations that take attributes (No Finding is the absence of findings).
ATTRIBUTE_OBSERVATIONS: tuple[str, ...] = tuple(name for name in OBSERVATIONS if name != "No Finding")
# Columns of `attribute_columns`, in CheXpert order: "<Observation>_side", "_severity", "_zone".
ATTRIBUTE_COLUMNS: tuple[str, ...] = tuple(
    f"{name}_{a}" for name in ATTRIBUTE_OBSERVATIONS for a in ATTRIBUTES
)

_NO_SIDE = frozenset(OBSERVATIONS.index(name) for name in ("Cardiomegaly", "Enlarged Cardiomediastinum"))
_NO_SEVERITY = frozenset((OBSERVATIONS.index("Support Devices"),))  # a device has no size
_NO_FINDING = OBSERVATIONS.index("No Finding")
_SEVERITY_RANK = {name: i for i, name in enumerate(SEVERITIES)}

# --- attribute words ---------------------------------------------------------------------------------------
# (regex, side, severity, zones) on normalised text; a match that overlaps an exclusion is no attribute word.

_LOCATION_WORDS: list[tuple[str, str | None, tuple[str, ...]]] = [
    (r"\bbi-?(?:basilar|basal)\b", "bilateral", ("lower",)),
    (r"\bbi-?apical\b", "bilateral", ("upper",)),
    (r"\bbilateral(?:ly)?\b|\bright and left\b|\bleft and right\b", "bilateral", ()),
    (
        r"\bboth(?: \w+){0,2}? (?:lungs?|lung fields|lung zones|bases|apices|lobes|sides|hemithora(?:x|ces)"
        r"|hila|zones|costophrenic)\b",
        "bilateral",
        (),
    ),
    (r"\brul\b", "right", ("upper",)),
    (r"\brml\b", "right", ("middle",)),
    (r"\brll\b", "right", ("lower",)),
    (r"\blul\b", "left", ("upper",)),
    (r"\blll\b", "left", ("lower",)),
    (r"\bright\b", "right", ()),
    (r"\bleft\b", "left", ()),
    (r"\blingula(?:r)?\b", "left", ("middle",)),
    (r"\bmiddle lobe\b", "right", ("middle",)),  # only the right lung has one
    (r"\bretrocardiac\b", None, ("lower",)),
    (
        r"\bupper (?:lobes?|lungs?|lung (?:zones?|fields?)|zones?|hemithora(?:x|ces))\b|\bap(?:ex|ices|ical)\b",
        None,
        ("upper",),
    ),
    (r"\bmid(?:dle)?[- ]?(?:lungs?|lung (?:zones?|fields?)|zones?)\b", None, ("middle",)),
    (
        r"\blower (?:lobes?|lungs?|lung (?:zones?|fields?)|zones?|hemithora(?:x|ces))\b"
        r"|\b(?:lung )?bases?\b|\bbas(?:i)?(?:lar|al)\b",
        None,
        ("lower",),
    ),
]
_LOCATION_EXCLUDE = re.compile(
    r"\b(?:right|left)[- ](?:ventric\w*|atri(?:um|al)|heart failure|sided heart failure)\b"
    r"|\bright (?:clinical|setting|context)\b|\b(?:right|left)[- ]to[- ](?:right|left)\b"
    r"|\bbase of the (?:neck|skull|heart|tongue)\b|\bleft (?:in place|behind|over)\b"
    r"|\b(?:compared (?:to|with)|relative to|as opposed to) (?:the )?(?:right|left)\b"
)

_SEVERITY_WORDS: list[tuple[str, str]] = [
    (r"\b(?:mild(?:ly)?|small|tiny|minimal(?:ly)?|trace|slight(?:ly)?|minor)\b", "mild"),
    (r"\b(?:moderate(?:ly)?|medium)\b", "moderate"),
    (r"\b(?:large|extensive(?:ly)?|massive(?:ly)?|severe(?:ly)?|marked(?:ly)?|huge)\b", "large"),
]
_CHANGE = (
    r"(?:improv\w*|decreas\w*|increas\w*|worse\w*|smaller|larger|less|more|chang\w*|progress\w*|resolv\w*"
    r"|diminish\w*|better|interval|reduc\w*|regress\w*|enlarging|low|lower|limited|rotated|degraded)"
)
_SEVERITY_EXCLUDE = re.compile(
    rf"\b(?:mild(?:ly)?|slight(?:ly)?|marked(?:ly)?|moderate(?:ly)?|minimal(?:ly)?|severe(?:ly)?|extensive(?:ly)?) {_CHANGE}\b"
    r"|\b(?:small|large|low|high)(?: \w+)? (?:lung )?volumes?\b|\blarge[- ]bore\b|\b(?:small|large)(?: body)? habitus\b"
    r"|\blarge breasts?\b|\bmarked(?:ly)? (?:by|with)\b|\bsmall bowel\b|\blarge bowel\b"
)


class _Word:
    """An attribute word found in a sentence."""

    __slots__ = ("start", "end", "kind", "side", "severity", "zones")

    def __init__(self, start: int, end: int, kind: str, side=None, severity=None, zones=()) -> None:
        self.start, self.end, self.kind = start, end, kind  # kind: "location" or "severity"
        self.side, self.severity, self.zones = side, severity, zones


_LOCATION_PATTERNS = [(re.compile(src), side, zones) for src, side, zones in _LOCATION_WORDS]
_SEVERITY_PATTERNS = [(re.compile(src), severity) for src, severity in _SEVERITY_WORDS]


def _overlaps(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    return any(s < end and start < e for s, e in spans)


def _attribute_words(text: str) -> list[_Word]:
    """Attribute words of a normalised sentence, by position; an overlapping later pattern yields."""
    words: list[_Word] = []
    taken: list[tuple[int, int]] = []
    excluded = [m.span() for m in _LOCATION_EXCLUDE.finditer(text)]
    for pattern, side, zones in _LOCATION_PATTERNS:
        for m in pattern.finditer(text):
            if not _overlaps(*m.span(), taken) and not _overlaps(*m.span(), excluded):
                words.append(_Word(*m.span(), "location", side=side, zones=zones))
                taken.append(m.span())
    excluded = [m.span() for m in _SEVERITY_EXCLUDE.finditer(text)]
    for pattern, severity in _SEVERITY_PATTERNS:
        for m in pattern.finditer(text):
            if not _overlaps(*m.span(), excluded):
                words.append(_Word(*m.span(), "severity", severity=severity))
    words.sort(key=lambda w: w.start)
    return words


# --- attaching words to mentions ---------------------------------------------------------------------------

_WORD_RE = re.compile(r"[a-z0-9/'-]+")
# Words that end a modifier's reach: a modifier and its noun are not separated by a verb, a preposition, a
# negation, a hedge or a clause word.
_BLOCKING = frozenset({
    "is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "there", "which", "that", "who",
    "with", "without", "in", "at", "on", "within", "from", "to", "into", "over", "by", "for", "involving",
    "overlying", "near", "along", "throughout", "no", "not", "nor", "but", "however", "although", "may", "might",
    "could", "can", "would", "should", "likely", "possibly", "probably", "suggest", "suggests", "suggesting",
    "suggestive", "represent", "represents", "representing", "reflect", "reflects", "reflecting", "consistent",
    "compatible", "concerning", "suspicious", "worrisome", "versus", "vs", "seen", "noted", "identified", "present",
    "visualized", "demonstrated", "appears", "appear", "remains", "remain", "persists", "persist", "measures",
    "measuring", "since", "after", "before",
})  # fmt: skip
_PREPOSITIONS = (
    "in|at|of|on|within|involving|over|throughout|into|along|overlying|near|obscuring|projecting over|behind"
    "|above|below|adjacent to|abutting|affecting|including|from"
)
# A location word right after a preposition, with only articles and other location words between.
_AFTER_PREPOSITION = re.compile(
    rf"\b(?:{_PREPOSITIONS})(?: (?:the|a|an|both|right|left|upper|lower|mid|middle|lung|lungs|lobe|lobes"
    r"|bilateral|hemithorax|lateral|medial|anterior|posterior|inferior|superior|peripheral|central))* ?$"
)
# Text between two mentions that makes the second an interpretation or an alternative of the first: a link
# phrase, at most `_LINK_WORDS` words, and nothing that starts another statement.
_LINK = re.compile(
    r"\b(?:or|and/or|versus|vs|represent\w*|reflect\w*|indicat\w*|suggest\w*|consistent with|compatible with"
    r"|in keeping with|concerning for|suspicious for|worrisome for|likely|favou?r\w*|such as|due to|secondary to"
    r"|related to)\b|/"
)
_LINK_BREAK = re.compile(r"\b(?:no|not|without|but|however|there|while|also|in addition)\b|[;:]")
_LINK_TAIL_BREAK = re.compile(
    r"\b(?:and|with|new)\b"
)  # after the link phrase: "..., likely effusion and atelectasis"
_LINK_WORDS = 10
_PRE_MODIFIER_WORDS = 6
_POST_MODIFIER_WORDS = 10


def _words_between(text: str, start: int, end: int) -> list[str]:
    return _WORD_RE.findall(text, start, end) if end > start else []


def _adjacent_chain(text: str, first: list[int], mentions: list[Mention]) -> list[int]:
    """Mentions that follow `first` with only spaces or hyphens between ("calcified nodule", "subsegmental
    atelectasis"): a modifier before the first reaches them too."""
    chain: list[int] = []
    end = max((mentions[i].end for i in first), default=-1)
    while end >= 0:
        nxt = [i for i, m in enumerate(mentions) if m.start >= end and not text[end : m.start].strip(" -")]
        if not nxt:
            break
        chain += nxt
        end = max(mentions[i].end for i in nxt)
    return chain


def _owners(text: str, word: _Word, mentions: list[Mention], words: list[_Word]) -> list[int]:
    """Positions in `mentions` of the mentions that own `word` (rules 1-5 of the module docstring)."""
    inside = [i for i, m in enumerate(mentions) if m.start <= word.start and word.end <= m.end]
    if inside:
        return inside
    before = [i for i, m in enumerate(mentions) if m.end <= word.start]
    after = [i for i, m in enumerate(mentions) if m.start >= word.end]
    previous = (
        [i for i in before if mentions[i].end == max(mentions[j].end for j in before)] if before else []
    )
    following = (
        [i for i in after if mentions[i].start == min(mentions[j].start for j in after)] if after else []
    )
    following += _adjacent_chain(text, following, mentions)

    if word.kind == "location" and _AFTER_PREPOSITION.search(text, 0, word.start):
        return previous or following
    if following:
        gap = _words_between(text, word.end, mentions[following[0]].start)
        if len(gap) <= _PRE_MODIFIER_WORDS and not _BLOCKING.intersection(gap):
            return following
    if previous and len(_words_between(text, mentions[previous[0]].end, word.start)) <= _POST_MODIFIER_WORDS:
        return previous
    if following and not previous:
        end = mentions[following[0]].start
        if not any(w.kind == word.kind and word.end <= w.start < end for w in words):
            return following
    return []


def _blank_words(text: str, start: int, end: int, words: list[_Word]) -> str:
    """text[start:end] with its attribute words removed (a link may cross "in the left lower lobe")."""
    chars = list(text[start:end])
    for w in words:
        if start <= w.start and w.end <= end:
            chars[w.start - start : w.end - start] = " " * (w.end - w.start)
    return "".join(chars)


def _is_link(between: str) -> bool:
    """Whether the text between two mentions links them: a link phrase, few words, no new statement (a
    descriptor before the link, "consolidation with air bronchograms ..., concerning for pneumonia", is fine)."""
    links = list(_LINK.finditer(between))
    if not links or len(_WORD_RE.findall(between)) > _LINK_WORDS:
        return False
    tail = between[links[-1].end() :]
    return not _LINK_BREAK.search(between) and not _LINK_TAIL_BREAK.search(tail)


def _merge_side(sides: set[str]) -> str | None:
    if not sides:
        return None
    if "bilateral" in sides or {"right", "left"} <= sides:
        return "bilateral"
    return next(iter(sides))


class _Found:
    """Attributes collected for one mention or one observation."""

    __slots__ = ("sides", "severities", "zones")

    def __init__(self) -> None:
        self.sides: set[str] = set()
        self.severities: set[str] = set()
        self.zones: set[str] = set()

    def add(self, word: _Word) -> None:
        if word.side:
            self.sides.add(word.side)
        if word.severity:
            self.severities.add(word.severity)
        self.zones.update(word.zones)

    def update(self, other: _Found, *, severity: bool = True) -> None:
        self.sides |= other.sides
        self.zones |= other.zones
        if severity:
            self.severities |= other.severities

    def as_dict(self, index: int) -> dict[str, str | None]:
        return {
            "side": None if index in _NO_SIDE else _merge_side(self.sides),
            "severity": (
                max(self.severities, key=_SEVERITY_RANK.__getitem__)
                if self.severities and index not in _NO_SEVERITY
                else None
            ),
            "zone": "+".join(z for z in ZONES if z in self.zones) or None,
        }


def sentence_attributes(text: str) -> list[tuple[Mention, _Found]]:
    """Each mention of one normalised sentence with the attribute words it owns (links applied)."""
    mentions = sorted(sentence_mentions(text), key=lambda m: (m.start, m.end))
    found = [_Found() for _ in mentions]
    if not mentions:
        return []
    words = _attribute_words(text)
    own_location = [False] * len(mentions)  # a location word attached after the mention (rules 2 and 4)
    for word in words:
        for i in _owners(text, word, mentions, words):
            if mentions[i].index in _NO_SIDE and text[word.start : word.end] == "large":
                continue  # "large heart": enlarged, no grade ("moderately large heart" is moderate)
            found[i].add(word)
            if word.kind == "location" and word.start >= mentions[i].end:
                own_location[i] = True

    # distinct mention spans in order; a link shares location between neighbouring spans
    spans = sorted({(m.start, m.end) for m in mentions})
    by_span = {span: [i for i, m in enumerate(mentions) if (m.start, m.end) == span] for span in spans}
    for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
        if s2 < e1 or not _is_link(_blank_words(text, e1, s2, words)):
            continue
        first, second = by_span[(s1, e1)], by_span[(s2, e2)]
        location = _Found()
        for i in first:
            location.update(found[i], severity=False)
        for j in second:
            if not found[j].sides and not found[j].zones:
                found[j].update(location, severity=False)
        if any(own_location[j] for j in second):
            for j in second:
                location.update(found[j], severity=False)
            for i in first:
                if not found[i].sides and not found[i].zones:
                    found[i].update(location, severity=False)
    return list(zip(mentions, found))


def report_attributes(report: str) -> dict[str, dict[str, str | None]]:
    """Attributes of the observations one report asserts: `{observation: {"side", "severity", "zone"}}`,
    in CheXpert order."""
    if not isinstance(report, str) or not report.strip():
        return {}
    per_observation: dict[int, _Found] = {}
    for line in normalize(report).split("\n"):
        if not line:
            continue
        for mention, found in sentence_attributes(line):
            if mention.index in (OTHER, _NO_FINDING) or not mention.asserted:
                continue
            per_observation.setdefault(mention.index, _Found()).update(found)
    return {OBSERVATIONS[i]: per_observation[i].as_dict(i) for i in sorted(per_observation)}


def label_attributes(reports: Sequence[str]) -> list[dict[str, dict[str, str | None]]]:
    """Per report, `{observation: {"side": ..., "severity": ..., "zone": ...}}` for every observation it
    asserts (positive or uncertain; No Finding aside); values as in the module docstring, None when unstated.
    An empty report gives {}."""
    return [report_attributes(report) for report in reports]


def attribute_columns(attributes: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """One report's attributes as CSV cells: every `ATTRIBUTE_COLUMNS` name, "" when not asserted or unstated."""
    row = dict.fromkeys(ATTRIBUTE_COLUMNS, "")
    for name, values in attributes.items():
        for attribute in ATTRIBUTES:
            column = f"{name}_{attribute}"
            if column in row and values.get(attribute):
                row[column] = str(values[attribute])
    return row


def flatten_attributes(attributes: Sequence[Mapping[str, Mapping[str, Any]]]) -> list[list[str]]:
    """Rows of CSV cells in `ATTRIBUTE_COLUMNS` order, one per report (for `label --attributes`)."""
    return [list(attribute_columns(record).values()) for record in attributes]
