"""Report text: section extraction and cleaning.

Cleaning mode `r2gen` follows the conventions of R2Gen's `clean_report_iu_xray` / `clean_report_mimic_cxr`
(Chen et al., EMNLP 2020), which most report-generation papers score with:

1. newlines become spaces; runs of `_`, of whitespace and of `.` collapse to one;
2. list numbering (`1. `, ` 2. `, ...) becomes a sentence break;
3. lower-case; split into sentences at `. `;
4. in each sentence quotes, apostrophes and backslashes are deleted and the punctuation
   `. , ? ; : * ! % ^ & _ + ( ) [ ] { } / < = > @` is removed;
5. non-empty sentences are joined with ` . ` and the report ends with ` .`, so the period is a token.

Deliberate differences from R2Gen's code (its quirks, not its intent): `/` becomes a space instead of
gluing words (`and/or` -> `and or`, not `andor`); decimals keep their point (`1.5 cm`, not `15 cm`);
numbering of any number is stripped, not only 1-5; whitespace left by removed punctuation is collapsed;
empty sentences are dropped. Word-internal hyphens stay (`x-ray`), as R2Gen's regular expression (whose
`:-\\[` is a character range that excludes `-`) effectively keeps them.
"""

from __future__ import annotations

import re

from leadrrg.config import CLEAN_MODES, SECTIONS
from leadrrg.errors import LeadrrgError

_UNDERSCORES = re.compile(r"_+")
_WHITESPACE = re.compile(r"\s+")
_DOTS = re.compile(r"\.{2,}")
_NUMBERING = re.compile(r"(?:^|(?<=\s))\d{1,2}\s?[.)]\s+")  # "1. ", "2) ", at start or after whitespace
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_DECIMAL_SENTINEL = "\u2024"  # one-dot leader: shields decimal points from sentence splitting
_DROP = re.compile(r"[\"'\\\u2018\u2019\u201c\u201d`]")
_PUNCTUATION = re.compile(r"[.,?;:*!%^&_+()\[\]{}/<=>@#~|$]")
_LOOSE_HYPHEN = re.compile(r"(?<!\w)-+|-+(?!\w)")  # hyphens not between word characters

# Section headers in free-text reports: an upper-case header followed by a colon.
_HEADER = re.compile(r"(?:^|(?<=[\s.]))([A-Z][A-Z &/]{2,40}?)\s*:")
_SECTION_ALIASES = {
    "FINDINGS": "findings",
    "FINDING": "findings",
    "IMPRESSION": "impression",
    "IMPRESSIONS": "impression",
    "CONCLUSION": "impression",
    "CONCLUSIONS": "impression",
}


def clean_report(text: str, mode: str = "r2gen") -> str:
    """Clean one report. `r2gen`: R2Gen conventions (module docstring); `none`: only strip whitespace."""
    if mode not in CLEAN_MODES:
        raise LeadrrgError(f"clean mode {mode!r} is unknown; expected one of: {', '.join(CLEAN_MODES)}")
    text = text or ""
    if mode == "none":
        return text.strip()
    text = _UNDERSCORES.sub("_", text.replace("\n", " "))
    text = _WHITESPACE.sub(" ", text)
    text = _DECIMAL_POINT.sub(_DECIMAL_SENTINEL, text)
    text = _DOTS.sub(".", text)
    text = _NUMBERING.sub(". ", text)
    sentences = []
    for sentence in text.strip().lower().split(". "):
        sentence = _DROP.sub("", sentence)
        sentence = _PUNCTUATION.sub(" ", sentence)
        sentence = _LOOSE_HYPHEN.sub(" ", sentence)
        sentence = " ".join(sentence.replace(_DECIMAL_SENTINEL, ".").split())
        if sentence:
            sentences.append(sentence)
    return " . ".join(sentences) + " ." if sentences else ""


def extract_sections(text: str) -> dict[str, str]:
    """Split a free-text report at its upper-case headers (`FINDINGS:`, `IMPRESSION:`, ...).

    Returns {lower-case header: text} for every header found; FINDING(S) map to `findings`,
    IMPRESSION(S) and CONCLUSION(S) to `impression`. Text before the first header is `preamble`.
    A report without headers returns {} (callers decide what an unlabelled report is).
    """
    text = text or ""
    matches = list(_HEADER.finditer(text))
    if not matches:
        return {}
    sections: dict[str, str] = {}
    preamble = text[: matches[0].start()].strip()
    if preamble:
        sections["preamble"] = preamble
    for i, match in enumerate(matches):
        header = " ".join(match.group(1).split())
        name = _SECTION_ALIASES.get(header, header.lower())
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = " ".join(text[match.end() : end].split())
        # A repeated header (e.g. an addendum) appends rather than overwrites.
        sections[name] = f"{sections[name]} {body}".strip() if name in sections else body
    return sections


def split_findings_impression(text: str) -> tuple[str, str]:
    """(findings, impression) of a report: from its headers when it has FINDINGS or IMPRESSION headers,
    else the whole text counts as findings (R2Gen's annotation.json stores the findings section only)."""
    sections = extract_sections(text)
    if "findings" not in sections and "impression" not in sections:
        return " ".join((text or "").split()), ""
    return sections.get("findings", ""), sections.get("impression", "")


def select_section(findings: str | None, impression: str | None, section: str) -> str:
    """The target text for `section`: findings | impression | both (findings then impression)."""
    if section not in SECTIONS:
        raise LeadrrgError(f"report section {section!r} is unknown; expected one of: {', '.join(SECTIONS)}")
    findings = " ".join((findings or "").split())
    impression = " ".join((impression or "").split())
    if section == "findings":
        return findings
    if section == "impression":
        return impression
    return " ".join(part for part in (findings, impression) if part)
