"""Natural-language generation metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr, with the numbers that
pycocoevalcap 1.2 gives, called the way R2Gen calls it (one reference and one hypothesis per study,
``{id: [text]}``), on text normalised by `normalize_report`.

The text normalisation (documented here once; `NORMALIZATION` is the one-line form recorded in
metrics.json) follows R2Gen's report cleaner (``clean_report_iu_xray`` / ``clean_report_mimic_cxr``):

1. lower-case; line breaks become spaces; runs of ``..`` collapse to one ``.``;
2. numbered-list markers (a number of one or two digits, a ``.`` and a space, at the start or after a
   space: ``1. ``, `` 2. ``) become sentence breaks;
3. the text is split into sentences at a ``.`` followed by whitespace or the end of the text;
4. in every sentence the characters R2Gen deletes are deleted: ``. , ? ; * ! % ^ & _ + ( ) [ ] { }``,
   ``" / \\ '`` and, because ``:-\\[`` in R2Gen's regex ``[.,?;*!%^&_+():-\\[\\]{}]`` is a character
   *range*, everything from ``:`` to ``[`` in ASCII (``: ; < = > ? @``). Digits and hyphens are kept
   (``x-ray``, ``-`` alone too); a decimal point inside a number is deleted (``1.5`` -> ``15``), as in
   R2Gen, and ``/`` glues words (``and/or`` -> ``andor``);
5. sentences are joined with `` . `` and the report ends with `` .``: the full stop is a token of its
   own; words are separated by single spaces.

Deliberate differences from R2Gen, all in rare input: sentences left empty after cleaning are dropped
(R2Gen keeps them, producing ``. .``); an empty report normalises to the empty string (R2Gen gives
``.``); list markers of any number become sentence breaks (R2Gen deletes ``1. `` and turns `` 2. `` to
`` 5. `` into ``. ``); ``|`` is deleted too, because METEOR's stdio protocol uses ``|||`` as its field
separator.

Note: ``leadrrg.data.text.clean_report(mode="r2gen")`` (the training-side cleaner) fixes some of
R2Gen's quirks (decimals, ``/``, loose hyphens); this function does not, so that scores stay comparable
with published R2Gen-era numbers. Applied to that cleaner's output it changes only those details.

Empty hypotheses: pycocoevalcap 1.2 scores an empty string without error (BLEU counts it as a
zero-length candidate in the brevity penalty, ROUGE-L / CIDEr / METEOR give it 0), and that is what we
want an empty report to score, so empty normalised strings are passed through unchanged; the tests
pin this behaviour.

METEOR runs ``meteor-1.5.jar`` through Java. When ``java`` is not on PATH, or the jar fails, ``meteor``
is ``None`` and the reason is in ``missing["meteor"]``; nothing is guessed.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

NORMALIZATION = (
    "R2Gen report cleaning (leadrrg.metrics.nlg.normalize_report): lower-case; numbered-list markers become "
    "sentence breaks; sentences split at '. '; characters .,?;*!%^&_+()[]{}\"/\\'| and :;<=>?@ deleted "
    "(digits and hyphens kept); sentences joined with ' . ' and ended with ' .'; empty sentences dropped"
)

NLG_METRICS: tuple[str, ...] = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")

# R2Gen's sentence cleaner: its regex '[.,?;*!%^&_+():-\[\]{}]' (where ':-\[' is the range ':'..'[', whose
# upper-case letters are gone after lower-casing) plus the characters it deletes with str.replace, plus
# '|' (METEOR's field separator).
_REMOVED_CHARS = re.compile(r"[.,?;*!%^&_+()\[\]{}:;<=>?@\"/\\'|]")
_LIST_MARKER = re.compile(r"(?:^|(?<=\s))\d{1,2}\.\s")
_SENTENCE_END = re.compile(r"\.(?:\s+|$)")
_DOTS = re.compile(r"\.{2,}")


def normalize_report(text: str) -> str:
    """Normalise a report the R2Gen way (see the module docstring): ``"The heart is normal. No
    effusion!"`` -> ``"the heart is normal . no effusion ."``."""
    text = text.lower().replace("\r", " ").replace("\n", " ")
    text = _DOTS.sub(".", text)
    text = _LIST_MARKER.sub(". ", text)
    sentences = []
    for sentence in _SENTENCE_END.split(text):
        words = _REMOVED_CHARS.sub("", sentence).split()
        if words:
            sentences.append(" ".join(words))
    if not sentences:
        return ""
    return " . ".join(sentences) + " ."


def java_version() -> str | None:
    """The first line of ``java -version`` (e.g. ``openjdk version "17.0.15" 2025-04-15``), or None when
    ``java`` is not on PATH or does not run."""
    java = shutil.which("java")
    if java is None:
        return None
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (result.stderr or result.stdout).strip().splitlines()
    if result.returncode != 0 or not lines:
        return None
    return lines[0].strip()


def _close_meteor(scorer: Any) -> str:
    """Stop the METEOR subprocess that pycocoevalcap's wrapper starts in its constructor; return the tail
    of its stderr (useful when it failed). Safe to call twice: the wrapper's own ``__del__`` runs later
    and finds the process already reaped."""
    process: subprocess.Popen = scorer.meteor_p
    with contextlib.suppress(OSError):
        process.stdin.close()
    try:
        process.wait(timeout=10)  # the jar exits at end of input
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    stderr = b""
    with contextlib.suppress(OSError, ValueError):
        stderr = process.stderr.read() or b""
    for stream in (process.stdout, process.stderr):
        with contextlib.suppress(OSError):
            stream.close()
    return stderr.decode("utf-8", errors="replace").strip()[-500:]


# One METEOR JVM per process and java: starting it and loading its tables is most of METEOR's time.
_SCORER: tuple[str, Any] | None = None  # (the java it runs on, pycocoevalcap's wrapper)


def _meteor_scorer(java: str) -> Any:
    """The process's METEOR scorer on `java` (started on first use, stopped at exit or when java changes)."""
    global _SCORER
    if _SCORER is not None and _SCORER[0] != java:
        _stop_meteor()
    if _SCORER is None:
        from pycocoevalcap.meteor.meteor import Meteor

        _SCORER = (java, Meteor())  # starts `java -jar meteor-1.5.jar` at once
        atexit.register(_stop_meteor)
    return _SCORER[1]


def _stop_meteor() -> str:
    """Stop the process's METEOR scorer, if one runs; the tail of its stderr."""
    global _SCORER
    running, _SCORER = _SCORER, None
    return _close_meteor(running[1]) if running is not None else ""


def meteor_scorer() -> Any:
    """The process's METEOR scorer (pycocoevalcap's wrapper over one JVM) on the `java` on PATH; OSError when
    there is none or it cannot start."""
    java = shutil.which("java")
    if java is None:
        raise FileNotFoundError("java not found on PATH")
    return _meteor_scorer(os.path.realpath(java))


def _meteor_score(gts: dict[int, list[str]], res: dict[int, list[str]]) -> tuple[float | None, str | None]:
    """METEOR through pycocoevalcap's wrapper: ``(score, None)``, or ``(None, reason)`` when Java is
    missing or the jar fails. Only the failures of the external tool are caught: a broken pipe or an
    unreadable answer (the jar died, or printed something that is not a score). A scorer that failed is
    stopped; the next call starts a new one."""
    java = shutil.which("java")
    if java is None:
        return None, "java not found on PATH (METEOR needs Java to run pycocoevalcap's meteor-1.5.jar)"
    try:
        scorer = _meteor_scorer(os.path.realpath(java))
    except OSError as exc:  # java on PATH but not executable
        return None, f"could not start java for METEOR ({type(exc).__name__}: {exc})"
    try:
        return float(scorer.compute_score(gts, res)[0]), None
    except (OSError, ValueError) as exc:  # BrokenPipeError when the JVM died; ValueError: float(b'')
        failure = f"{type(exc).__name__}: {exc}"
        # the wrapper holds its lock when the jar fails mid-answer; release it so __del__ cannot deadlock
        if scorer.lock.locked():
            scorer.lock.release()
    stderr = _stop_meteor()
    detail = f"; java stderr: {stderr}" if stderr else ""
    return None, f"METEOR jar failed ({failure}){detail}"


def nlg_scores(
    references: Sequence[str], hypotheses: Sequence[str], *, meteor: bool = True
) -> dict[str, Any]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr of ``hypotheses`` against ``references`` (one reference per
    hypothesis, same order), both normalised by `normalize_report`.

    Returns ``{"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider": float | None,
    "missing": {metric: reason}}``; ``missing`` is empty when every metric was computed. ``meteor=False``
    skips the JVM (``meteor`` is then None, with the reason "disabled")."""
    if len(references) != len(hypotheses):
        raise ValueError(f"nlg_scores: {len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("nlg_scores: no reports to score")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    # R2Gen's layout: one study id -> a one-element list, for references and hypotheses alike. An empty
    # report stays "": pycocoevalcap 1.2 scores it 0 without error (see the module docstring; tested).
    gts = {i: [normalize_report(text)] for i, text in enumerate(references)}
    res = {i: [normalize_report(text)] for i, text in enumerate(hypotheses)}

    scores: dict[str, Any] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n, value in enumerate(bleu, start=1):
        scores[f"bleu_{n}"] = float(value)
    missing: dict[str, str] = {}
    if meteor:
        scores["meteor"], reason = _meteor_score(gts, res)
        if reason is not None:
            missing["meteor"] = reason
    else:
        scores["meteor"] = None
        missing["meteor"] = "disabled (meteor=False / --no-meteor)"
    scores["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    if any(words for (words,) in gts.values()):
        scores["cider"] = float(Cider().compute_score(gts, res)[0])
    else:  # CIDEr's document frequencies come from the references: none, no score
        scores["cider"] = None
        missing["cider"] = "undefined: every reference report is empty"
    scores["missing"] = missing
    return scores
