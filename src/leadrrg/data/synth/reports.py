"""SynthCXR reports: a findings section for a `Findings`, in standard radiology wording.

Every positive observation is stated with its severity and side in one of several phrasings; the relevant
negatives are stated the way radiologists write them ("No pleural effusion or pneumothorax."). Wording is
chosen so that a CheXpert-style labeler recovers the image's labels: each sentence names only its own
observation (no "opacity" in a pneumonia sentence), and hedges ("likely", "may represent"), which such a
labeler reads as uncertain, are used at `SynthConfig.hedge_rate` only. The positive sentences are in
`synth_phrases`; the negatives and the assembly of the report are here.
"""

from __future__ import annotations

import numpy as np

from leadrrg.data.synth import phrases
from leadrrg.data.synth.phrases import choose
from leadrrg.data.synth.types import Findings, SynthConfig

__all__ = ["write_report"]


# --------------------------------------------------------------------------------------------------
# Negatives


def _negatives(findings: Findings, rng, config: SynthConfig) -> dict[str, list[str]]:
    """Relevant negative sentences by section (heart, lungs, pleura, bones), each stated with
    probability `negative_rate` (the heart statement almost always)."""
    has = findings.present
    say = lambda p=config.negative_rate: bool(rng.random() < p)  # noqa: E731
    out: dict[str, list[str]] = {"heart": [], "lungs": [], "pleura": [], "bones": []}
    cardio, mediast = "Cardiomegaly" in has, "Enlarged Cardiomediastinum" in has
    if not cardio and not mediast and say(0.95):
        out["heart"].append(
            choose(
                rng,
                [
                    "Heart size is normal.",
                    "The heart size and mediastinal contours are within normal limits.",
                    "The cardiomediastinal silhouette is within normal limits.",
                    "Normal heart size and mediastinal contours.",
                    "The heart is normal in size.",
                ],
            )
        )
    elif not cardio and say(0.9):
        out["heart"].append(choose(rng, ["Heart size is normal.", "The heart is normal in size."]))
    elif not mediast and say(0.4):
        out["heart"].append(
            choose(rng, ["Mediastinal contours are normal.", "The mediastinum is not widened."])
        )
    parenchymal = ("Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis")
    pleural_free = "Pleural Effusion" not in has and "Pneumothorax" not in has
    if not any(name in has for name in parenchymal):
        if pleural_free and "Consolidation" not in has and say(0.35):
            out["lungs"].append("No focal consolidation, pleural effusion, or pneumothorax.")
            pleural_free = False  # already said
            return _bones(findings, rng, config, out)
        if say(0.95):
            out["lungs"].append(
                choose(
                    rng,
                    [
                        "The lungs are clear.",
                        "Lungs are clear bilaterally.",
                        "The lungs are well expanded and clear.",
                        "No focal consolidation.",
                    ],
                )
            )
    else:
        if "Consolidation" not in has and "Pneumonia" not in has and say():
            out["lungs"].append(choose(rng, ["No focal consolidation.", "There is no focal consolidation."]))
    if "Edema" not in has and say(config.negative_rate * 0.6):
        out["lungs"].append(choose(rng, ["No pulmonary edema.", "There is no pulmonary edema."]))
    if pleural_free and say():
        out["pleura"].append(
            choose(
                rng,
                [
                    "No pleural effusion or pneumothorax.",
                    "There is no pleural effusion or pneumothorax.",
                    "No effusion or pneumothorax.",
                ],
            )
        )
    elif "Pleural Effusion" not in has and "Pneumothorax" in has and say():
        out["pleura"].append(choose(rng, ["No pleural effusion.", "There is no pleural effusion."]))
    elif "Pneumothorax" not in has and "Pleural Effusion" in has and say():
        out["pleura"].append(choose(rng, ["No pneumothorax.", "There is no pneumothorax."]))
    return _bones(findings, rng, config, out)


def _bones(findings: Findings, rng, config: SynthConfig, out: dict[str, list[str]]) -> dict[str, list[str]]:
    if "Fracture" not in findings.present and rng.random() < config.negative_rate * 0.6:
        out["bones"].append(
            choose(
                rng,
                [
                    "No acute osseous abnormality.",
                    "No displaced rib fracture.",
                    "The osseous structures are intact.",
                    "No acute bony abnormality.",
                ],
            )
        )
    return out


# --------------------------------------------------------------------------------------------------


def write_report(findings: Findings, rng: np.random.Generator, config: SynthConfig | None = None) -> str:
    """The findings section for `findings`: positives with severity and side, relevant negatives."""
    if config is None:
        config = SynthConfig()
    has = findings.present
    sections: dict[str, list[str]] = {"devices": [], "heart": [], "lungs": [], "pleura": [], "bones": []}
    if "Support Devices" in has:
        sections["devices"] = phrases.devices(has["Support Devices"], rng, config)
    if "Cardiomegaly" in has:
        sections["heart"].append(phrases.cardiomegaly(has["Cardiomegaly"], rng, config))
    if "Enlarged Cardiomediastinum" in has:
        sections["heart"].append(phrases.mediastinum(has["Enlarged Cardiomediastinum"], rng, config))
    lungs = sections["lungs"]
    consolidation, pneumonia = has.get("Consolidation"), has.get("Pneumonia")
    merged = (
        consolidation is not None
        and pneumonia is not None
        and consolidation.side == pneumonia.side
        and consolidation.zone == pneumonia.zone
        and rng.random() < 0.7
    )
    if consolidation is not None:
        lungs.append(phrases.consolidation(consolidation, rng, config, with_pneumonia=merged))
    if pneumonia is not None and not merged:
        lungs.append(phrases.pneumonia(pneumonia, rng, config))
    for name, fn in (
        ("Lung Opacity", phrases.lung_opacity),
        ("Lung Lesion", phrases.lung_lesion),
        ("Edema", phrases.edema),
        ("Atelectasis", phrases.atelectasis),
    ):
        if name in has:
            lungs.append(fn(has[name], rng, config))
    rng.shuffle(lungs)
    for name, fn in (
        ("Pleural Effusion", phrases.pleural_effusion),
        ("Pneumothorax", phrases.pneumothorax),
        ("Pleural Other", phrases.pleural_other),
    ):
        if name in has:
            sections["pleura"].append(fn(has[name], rng, config))
    if len(sections["pleura"]) > 1:
        rng.shuffle(sections["pleura"])
    if "Fracture" in has:
        sections["bones"].append(phrases.fracture(has["Fracture"], rng, config))
    for section, sentences in _negatives(findings, rng, config).items():
        sections[section].extend(sentences)
    # Usual order: devices, heart, lungs, pleura, bones; sometimes lungs and pleura come before the heart.
    order = ["devices", "heart", "lungs", "pleura", "bones"]
    if rng.random() < 0.25:
        order = ["devices", "lungs", "pleura", "heart", "bones"]
    sentences = [s for section in order for s in sections[section]]
    if findings.labels()[0] == 1 and rng.random() < 0.3:
        sentences.append("No acute cardiopulmonary process.")
    return " ".join(sentences)
