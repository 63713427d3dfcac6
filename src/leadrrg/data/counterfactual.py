"""Counterfactual training reports (`model.grounding.counterfactual`, docs/FAITHFULNESS.md).

With truth forcing alone the decoder never sees p disagree with the image, so where the visual tokens show a
finding clearly it may read the finding from them and ignore p (the visual bypass the flip test measures). A
counterfactual study keeps its image but flips one finding in the labels the decoder reads (present <-> absent),
and its target report is edited to match: the sentences that mention the finding are removed and one sentence
stating its new state is put in their place. The experts still learn from the true labels; only the decoder's
evidence and target change, so the one way to predict the edited sentence is to read p.

The editor works on report text, so it needs no generator of reports and runs on real data as on SynthCXR:

- sentences are split at `.`, `!` or `?` followed by white space, and each is read by the rule labeler;
- the replacement sentences come from the training reports themselves: a sentence joins the bank of a
  finding's positive (or negative) statements when that finding is the only one of the 13 it mentions;
- when a finding is switched on, sentences that declare the whole study normal ("no acute cardiopulmonary
  abnormality") go too;
- an edit is kept only when the labeler's reading of the edited report asserts the flipped finding iff it was
  switched on and asserts every other finding exactly as the original report did; otherwise another finding is
  tried, and after `MAX_TRIES` the study is used as it is. So an edit never teaches a report that contradicts the
  labels the decoder read, as far as the labeler can tell.

A side flip (`model.grounding.side_flip`, with attribute experts) keeps every finding and swaps the side of one
lateral finding: `left` <-> `right` in the sentences that assert it. It is kept only when the labeler then reads
the same findings and the flipped finding, and only it, on the other side. The decoder reads the side its target
report states (`leadrrg.data.attributes`), so the side it writes must come from the experts' side evidence, not
from the image's look or from what usually goes with what. Inserted bank sentences are read the same way: the
decoder reads the side the inserted sentence states, never a side unrelated to the words it must write.

A hedge edit (`model.grounding.hedge_edit`, with `model.grounding.hedge`) restates one finding the report asserts as
the training reports hedge it: its sentences are replaced by a sentence of the finding's hedged bank (those the
labeler reads uncertain and that mention no other finding), kept only when the labeler then reads that finding
uncertain and every other finding as before. The decoder reads the finding as 1/2, so the few hedges real and
synthetic reports contain become enough to learn what 1/2 means.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import torch

from leadrrg.constants import OBSERVATIONS, SIDE_OBSERVATIONS

SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")
# Whole-study normal statements, which a report with a finding must not keep.
NORMAL_STUDY = re.compile(
    r"\b(no (acute|active) (cardiopulmonary|intrathoracic|chest|pulmonary)?\s*"
    r"(disease|process|abnormalit\w*|findings?)|normal (chest|study|examination|radiograph)|"
    r"(chest|study|examination|radiograph) is (normal|unremarkable))\b",
    re.IGNORECASE,
)
# "The lungs are clear" says no parenchymal finding, though the labeler reads no observation in it.
CLEAR_LUNGS = re.compile(r"\blungs? (are|is|remain)\b[^.]{0,30}?\bclear\b|\bclear lungs?\b", re.IGNORECASE)
LUNG_FINDINGS = frozenset(
    OBSERVATIONS.index(n)
    for n in ("Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis")
)
NO_FINDING = OBSERVATIONS.index("No Finding")
SUPPORT_DEVICES = OBSERVATIONS.index("Support Devices")
FINDING_COLUMNS = tuple(i for i in range(len(OBSERVATIONS)) if i != NO_FINDING)
MAX_TRIES = 4
PROGRESS_EVERY = 1_000  # reports read between two progress reports while the banks are built
SIDE_WORD = re.compile(r"\b(right|left)\b", re.IGNORECASE)
SWAPPED = {
    "right": "left",
    "left": "right",
    "Right": "Left",
    "Left": "Right",
    "RIGHT": "LEFT",
    "LEFT": "RIGHT",
}


def split_sentences(report: str) -> list[str]:
    return [s for s in SENTENCE_BREAK.split(report.strip()) if s]


class CounterfactualEditor:
    """Edits training reports for one flipped finding. `reports`: the training reports (for the phrase banks);
    `flippable`: the CheXpert names the decoder reads (the experts' names; No Finding is never flipped)."""

    def __init__(
        self, reports: Sequence[str], flippable: Sequence[str], progress: Callable[[int], None] | None = None
    ):
        """Banks from the sentences of `reports`; `progress(n)` is told every `PROGRESS_EVERY` reports read."""
        self._labels: dict[str, np.ndarray] = {}
        self.flippable = [OBSERVATIONS.index(n) for n in flippable if n in OBSERVATIONS and n != "No Finding"]
        positive: dict[int, set[str]] = {k: set() for k in self.flippable}
        negative: dict[int, set[str]] = {k: set() for k in self.flippable}
        hedged: dict[int, set[str]] = {k: set() for k in self.flippable}
        # Each distinct report and sentence is read once: the banks are sets, and MIMIC-CXR's entries repeat their
        # study's report and its reports repeat sentences.
        seen_reports: set[str] = set()
        seen_sentences: set[str] = set()
        for count, report in enumerate(reports, 1):
            if progress is not None and count % PROGRESS_EVERY == 0:
                progress(PROGRESS_EVERY)
            if report in seen_reports:
                continue
            seen_reports.add(report)
            for sentence in split_sentences(report or ""):
                if sentence in seen_sentences:
                    continue
                seen_sentences.add(sentence)
                values = self.read(sentence)
                mentioned = [k for k in FINDING_COLUMNS if not np.isnan(values[k])]
                if len(mentioned) == 1 and mentioned[0] in positive:
                    k = mentioned[0]
                    if values[k] == 1:
                        positive[k].add(sentence)
                    elif values[k] == 0:
                        negative[k].add(sentence)
                    else:
                        hedged[k].add(sentence)
        # sorted: the same banks in every process, whatever the set order
        self.positive = {k: sorted(v) for k, v in positive.items()}
        self.negative = {k: sorted(v) for k, v in negative.items()}
        self.hedged = {k: sorted(v) for k, v in hedged.items()}

    def read(self, text: str) -> np.ndarray:
        """The labeler's reading (14,) of a sentence or report, cached (training reports repeat sentences)."""
        values = self._labels.get(text)
        if values is None:
            from leadrrg.labeler.rules import label_text

            values = label_text(text)
            if len(self._labels) < 200_000:
                self._labels[text] = values
        return values

    def edit(
        self, report: str, labels: np.ndarray, generator: torch.Generator | None = None
    ) -> tuple[str, np.ndarray] | None:
        """(edited report, decoder labels (14,): `labels` with one finding flipped and No Finding recomputed) or
        None when no checked edit was found. `labels` (14,) 1/0/-1/NaN are the study's labels."""
        if not self.flippable or not report:
            return None
        sentences = split_sentences(report)
        before = self.read(report)
        for _ in range(MAX_TRIES):
            k = self.flippable[int(torch.randint(len(self.flippable), (1,), generator=generator))]
            switch_on = labels[k] != 1  # absent or unmentioned (NaN) -> on
            bank = self.positive[k] if switch_on else self.negative[k]
            if switch_on and not bank:
                continue
            kept: list[str] = []
            position = None
            for sentence in sentences:
                mentions = not np.isnan(self.read(sentence)[k])
                if mentions or (switch_on and self.denies_all(sentence, k)):
                    position = len(kept) if position is None else position
                    continue
                kept.append(sentence)
            if bank:
                choice = bank[int(torch.randint(len(bank), (1,), generator=generator))]
                kept.insert(len(kept) if position is None else position, choice)
            edited = " ".join(kept)
            if not self.consistent(before, self.read(edited), k, switch_on):
                continue
            flipped = np.array(labels, dtype=np.float32, copy=True)
            flipped[k] = 1.0 if switch_on else 0.0
            if not np.isnan(flipped[NO_FINDING]):
                others = [i for i in FINDING_COLUMNS if i != SUPPORT_DEVICES]
                flipped[NO_FINDING] = 0.0 if np.any(np.isin(flipped[others], (1.0, -1.0))) else 1.0
            return edited, flipped
        return None

    def flip_side(self, report: str, generator: torch.Generator | None = None) -> str | None:
        """`report` with one asserted lateral finding's side swapped (left <-> right in the sentences asserting it),
        or None when no checked swap exists: the labeler must read the same findings, the chosen one on the other
        side and every other finding's side as before."""
        from leadrrg.labeler.attributes import report_attributes

        before = report_attributes(report)
        lateral = [
            name
            for name, values in sorted(before.items())
            if name in SIDE_OBSERVATIONS and values.get("side") in ("right", "left")
        ]
        sentences = split_sentences(report)
        for _ in range(min(MAX_TRIES, len(lateral))):
            name = lateral[int(torch.randint(len(lateral), (1,), generator=generator))]
            k = OBSERVATIONS.index(name)
            edited = " ".join(
                SIDE_WORD.sub(lambda m: SWAPPED[m.group(0)], s) if self.read(s)[k] in (1.0, -1.0) else s
                for s in sentences
            )
            after = report_attributes(edited)
            if after.keys() != before.keys() or not np.array_equal(
                self.read(edited), self.read(report), True
            ):
                continue
            flipped = "left" if before[name]["side"] == "right" else "right"
            if after[name].get("side") != flipped:
                continue
            others = {n: v.get("side") for n, v in before.items() if n != name}
            if all(after[n].get("side") == side for n, side in others.items()):
                return edited
        return None

    def hedge(self, report: str, labels: np.ndarray, generator: torch.Generator | None = None) -> str | None:
        """`report` with one finding it states as present, and `labels` (14,) have present, stated again as the
        training reports hedge it: its sentences replaced by a hedged sentence of that finding from the bank (one
        the labeler reads as uncertain, e.g. "possible left lower lobe pneumonia"). None when no checked edit exists:
        the labeler must read the finding uncertain and every other finding as before."""
        if not report:
            return None
        before = self.read(report)
        stated = [k for k in self.flippable if before[k] == 1 and labels[k] == 1 and self.hedged[k]]
        sentences = split_sentences(report)
        for _ in range(min(MAX_TRIES, len(stated))):
            k = stated[int(torch.randint(len(stated), (1,), generator=generator))]
            kept = [sentence for sentence in sentences if np.isnan(self.read(sentence)[k])]
            position = next(i for i, sentence in enumerate(sentences) if not np.isnan(self.read(sentence)[k]))
            bank = self.hedged[k]
            kept.insert(
                min(position, len(kept)), bank[int(torch.randint(len(bank), (1,), generator=generator))]
            )
            edited = " ".join(kept)
            after = self.read(edited)
            others = [i for i in FINDING_COLUMNS if i != k]
            if after[k] == -1 and np.array_equal(before[others], after[others], equal_nan=True):
                return edited
        return None

    @staticmethod
    def denies_all(sentence: str, k: int) -> bool:
        """A sentence that rules finding k out without naming it (the whole study, or the lungs, normal)."""
        return bool(NORMAL_STUDY.search(sentence) or (k in LUNG_FINDINGS and CLEAR_LUNGS.search(sentence)))

    @staticmethod
    def consistent(before: np.ndarray, after: np.ndarray, k: int, switch_on: bool) -> bool:
        """The edited reading asserts finding k iff it was switched on, and every other finding as before."""
        if (after[k] == 1) != switch_on:
            return False
        others = [i for i in FINDING_COLUMNS if i != k]
        return bool(np.array_equal(before[others] == 1, after[others] == 1))
