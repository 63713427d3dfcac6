"""SynthCXR reports: a findings section for a `Findings`, in standard radiology wording.

Every positive observation is stated with its severity and side in one of several phrasings; the relevant
negatives are stated the way radiologists write them ("No pleural effusion or pneumothorax."). Wording is
chosen so that a CheXpert-style labeler recovers the image's labels: each sentence names only its own
observation (no "opacity" in a pneumonia sentence), and hedges ("likely", "may represent"), which such a
labeler reads as uncertain, are used at `SynthConfig.hedge_rate` only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from leadrrg.data.synth import Finding, Findings, SynthConfig


def _choose(rng: np.random.Generator, options: list[str] | tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _location(rng: np.random.Generator, side: str, zone: str) -> str:
    """Anatomic location words for a side and zone: 'right lower lobe', 'left base', 'lingula', ..."""
    if side == "bilateral":
        return {
            "upper": _choose(
                rng, ["bilateral upper lobes", "both upper lungs", "bilateral upper lung zones"]
            ),
            "middle": _choose(rng, ["bilateral mid lungs", "both mid lung zones"]),
            "lower": _choose(rng, ["bilateral lower lobes", "both lung bases", "bilateral lung bases"]),
        }[zone]
    if zone == "upper":
        return _choose(rng, [f"{side} upper lobe", f"{side} upper lung", f"{side} upper lung zone"])
    if zone == "middle":
        if side == "right":
            return _choose(rng, ["right middle lobe", "right mid lung", "right mid lung zone"])
        return _choose(rng, ["lingula", "left mid lung", "left mid lung zone"])
    return _choose(rng, [f"{side} lower lobe", f"{side} lung base", f"{side} base"])


def _basal(rng: np.random.Generator, side: str) -> str:
    return "bibasilar" if side == "bilateral" else _choose(rng, [f"{side} basilar", f"{side} basal"])


def _hedge(rng: np.random.Generator, config: SynthConfig) -> bool:
    return bool(rng.random() < config.hedge_rate)


# --------------------------------------------------------------------------------------------------
# Positive sentences, one function per observation: (finding, rng, config) -> sentence


def _devices(f: Finding, rng, config) -> list[str]:
    bank = {
        "endotracheal tube": [
            f"Endotracheal tube terminates {rng.integers(3, 7)} cm above the carina.",
            "The endotracheal tube is in standard position.",
            "An endotracheal tube is in place with its tip above the carina.",
        ],
        "nasogastric tube": [
            "A nasogastric tube courses below the diaphragm into the stomach.",
            "Enteric tube tip is in the stomach.",
            "Nasogastric tube extends below the left hemidiaphragm.",
        ],
        "central venous catheter": [
            "Right internal jugular central venous catheter terminates in the superior vena cava.",
            "Right IJ central line with tip in the SVC.",
            "A right-sided central venous catheter is in place with its tip in the lower SVC.",
        ],
        "picc": [
            "Left PICC line terminates in the superior vena cava.",
            "A left upper extremity PICC terminates in the SVC.",
            "Left-sided PICC with tip projecting over the SVC.",
        ],
        "pacemaker": [
            "Left chest wall pacemaker with leads in the right atrium and right ventricle.",
            "A dual-lead cardiac pacemaker is in place.",
            "Left-sided pacemaker device with intact leads.",
        ],
        "sternotomy wires": [
            "Median sternotomy wires are noted.",
            "Intact median sternotomy wires.",
            "Postoperative changes of median sternotomy with sternal wires.",
        ],
    }
    return [_choose(rng, bank[d]) for d in f.devices]


def _cardiomegaly(f: Finding, rng, config) -> str:
    return _choose(
        rng,
        {
            "mild": ["Mild cardiomegaly.", "The heart is mildly enlarged.", "Heart size is mildly enlarged."],
            "moderate": [
                "Moderate cardiomegaly.",
                "The heart is moderately enlarged.",
                "Moderate enlargement of the cardiac silhouette.",
            ],
            "large": ["Marked cardiomegaly.", "Severe cardiomegaly.", "The heart is severely enlarged."],
        }[f.severity],
    )


def _mediastinum(f: Finding, rng, config) -> str:
    return _choose(
        rng,
        {
            "mild": ["The mediastinum is mildly widened.", "Mild widening of the mediastinum."],
            "moderate": [
                "Widened mediastinum.",
                "The mediastinal contour is widened.",
                "The superior mediastinum is widened.",
            ],
            "large": ["Marked widening of the mediastinum.", "The mediastinum is markedly widened."],
        }[f.severity],
    )


def _lung_opacity(f: Finding, rng, config) -> str:
    loc = _location(rng, f.side, f.zone)
    plural = "opacities" if f.side == "bilateral" else "opacity"
    quality = {
        "mild": ["faint", "mild hazy", "subtle"],
        "moderate": ["hazy", "ill-defined", "patchy"],
        "large": ["extensive", "large confluent", "dense"],
    }[f.severity]
    q = _choose(rng, quality)
    if _hedge(rng, config):
        return f"Possible {q} {plural} in the {loc}."
    return _choose(
        rng,
        [
            f"{_cap(q)} {plural} in the {loc}.",
            f"There is {q} {plural} in the {loc}.",
            f"{_cap(q)} {loc} {plural}.",
        ],
    ).replace("There is extensive opacities", "There are extensive opacities")


def _lung_lesion(f: Finding, rng, config) -> str:
    side = f.side if f.side != "bilateral" else "right"
    loc = _location(rng, side, f.zone)
    if f.severity == "mild":
        what = f"{rng.integers(7, 11)} mm nodule"
    elif f.severity == "moderate":
        what = f"{rng.integers(12, 25) / 10:.1f} cm nodule"
    else:
        what = f"{rng.integers(35, 70) / 10:.1f} cm mass"
    if _hedge(rng, config):
        return f"Possible {what} in the {loc}."
    noun = what.split()[-1]
    return _choose(
        rng,
        [
            f"A {what} is seen in the {loc}.",
            f"There is a {what} in the {loc}.",
            f"{_cap(loc)} {noun} measuring {what.rsplit(' ', 1)[0]}.",
        ],
    )


def _edema(f: Finding, rng, config) -> str:
    return _choose(
        rng,
        {
            "mild": [
                "Mild pulmonary edema.",
                "Mild interstitial edema.",
                "Mild pulmonary vascular congestion with interstitial edema.",
            ],
            "moderate": [
                "Moderate pulmonary edema.",
                "Moderate interstitial pulmonary edema with Kerley B lines.",
                "Moderate bilateral perihilar edema.",
            ],
            "large": [
                "Severe pulmonary edema.",
                "Marked bilateral perihilar pulmonary edema.",
                "Severe interstitial and alveolar edema.",
            ],
        }[f.severity],
    )


def _consolidation(f: Finding, rng, config, with_pneumonia: bool = False) -> str:
    loc = _location(rng, f.side, f.zone)
    quality = {
        "mild": ["small area of", "patchy", "focal"],
        "moderate": ["", "focal", "dense"],
        "large": ["dense lobar", "extensive", "lobar"],
    }[f.severity]
    q = _choose(rng, quality)
    core = f"{q} consolidation".strip()
    if f.severity != "mild" and rng.random() < 0.4:
        core += " with air bronchograms"
    if _hedge(rng, config):
        if with_pneumonia:  # the consolidation is certain, its cause is hedged
            return f"{_cap(core)} in the {loc}, concerning for pneumonia."
        return f"Possible {core} in the {loc}."
    if with_pneumonia:
        tail = _choose(
            rng, ["consistent with pneumonia", "compatible with pneumonia", "in keeping with pneumonia"]
        )
        return _choose(rng, [f"{_cap(core)} in the {loc}, {tail}.", f"There is {core} in the {loc} {tail}."])
    return _choose(
        rng, [f"{_cap(core)} in the {loc}.", f"There is {core} in the {loc}.", f"{_cap(loc)} {core}."]
    )


def _pneumonia(f: Finding, rng, config) -> str:
    loc = _location(rng, f.side, f.zone)
    size = {"mild": "early ", "moderate": "", "large": "extensive "}[f.severity]
    if _hedge(rng, config):
        return _choose(
            rng,
            [f"Findings concerning for {size}{loc} pneumonia.", f"{_cap(loc)} pneumonia cannot be excluded."],
        )
    return _choose(
        rng,
        [
            f"Findings consistent with {size}{loc} pneumonia.",
            f"{_cap(size)}{loc} pneumonia.",
            f"There is {size}pneumonia in the {loc}.",
        ],
    )


def _atelectasis(f: Finding, rng, config) -> str:
    where = _basal(rng, f.side)
    if f.severity == "large":
        lobe = "both lower lobes" if f.side == "bilateral" else f"the {f.side} lower lobe"
        return _choose(rng, [f"Complete atelectasis of {lobe}.", f"Atelectasis of {lobe} with volume loss."])
    if _hedge(rng, config):
        return f"Probable {where} atelectasis."
    q = (
        _choose(rng, ["mild", "minimal", "plate-like", "linear"])
        if f.severity == "mild"
        else _choose(rng, ["moderate", "subsegmental", "streaky"])
    )
    if f.side == "bilateral":
        return _choose(
            rng, [f"{_cap(q)} bibasilar atelectasis.", f"There is {q} atelectasis at both lung bases."]
        )
    return _choose(
        rng,
        [
            f"{_cap(q)} {where} atelectasis.",
            f"{_cap(q)} atelectasis at the {f.side} lung base.",
            f"There is {q} atelectasis in the {f.side} base.",
        ],
    )


def _pneumothorax(f: Finding, rng, config) -> str:
    size = {"mild": "small", "moderate": "moderate", "large": "large"}[f.severity]
    apical = " apical" if f.severity == "mild" and rng.random() < 0.6 else ""
    sentence = _choose(
        rng,
        [f"{_cap(size)} {f.side}{apical} pneumothorax.", f"There is a {size} {f.side}{apical} pneumothorax."],
    )
    if rng.random() < 0.3:
        sentence += " The visceral pleural line is visible."
    return sentence


def _pleural_effusion(f: Finding, rng, config) -> str:
    size = {"mild": _choose(rng, ["small", "small"]), "moderate": "moderate", "large": "large"}[f.severity]
    if f.side == "bilateral":
        return _choose(
            rng,
            [f"{_cap(size)} bilateral pleural effusions.", f"There are {size} bilateral pleural effusions."],
        )
    if f.severity == "mild" and rng.random() < 0.35:
        return f"Blunting of the {f.side} costophrenic angle consistent with a small pleural effusion."
    return _choose(
        rng,
        [
            f"{_cap(size)} {f.side} pleural effusion.",
            f"There is a {size} {f.side} pleural effusion.",
            f"{_cap(size)} {f.side}-sided pleural effusion.",
        ],
    )


def _pleural_other(f: Finding, rng, config) -> str:
    where = {"right": "right", "left": "left", "bilateral": "bilateral"}[f.side]
    kind = "apical " if f.zone == "upper" else _choose(rng, ["lateral ", ""])
    q = {"mild": "mild ", "moderate": "", "large": "marked "}[f.severity]
    return _choose(
        rng, [f"{_cap(q)}{where} {kind}pleural thickening.", f"There is {q}{where} {kind}pleural thickening."]
    )


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def _fracture(f: Finding, rng, config) -> str:
    side = f.side if f.side != "bilateral" else "right"
    rib = int(rng.integers(4, 9))
    if f.severity == "large":
        return _choose(
            rng,
            [
                f"Multiple {side} rib fractures.",
                f"Fractures of the {side} {_ordinal(rib)} through {_ordinal(rib + 2)} ribs.",
            ],
        )
    kind = "nondisplaced" if f.severity == "mild" else _choose(rng, ["displaced", "acute displaced"])
    return _choose(
        rng,
        [
            f"There is a {kind} fracture of the {side} {_ordinal(rib)} rib.",
            f"{_cap(kind)} {side} {_ordinal(rib)} rib fracture.",
            f"{_cap(kind)} fracture of the {side} lateral {_ordinal(rib)} rib.",
        ],
    )


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
            _choose(
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
        out["heart"].append(_choose(rng, ["Heart size is normal.", "The heart is normal in size."]))
    elif not mediast and say(0.4):
        out["heart"].append(
            _choose(rng, ["Mediastinal contours are normal.", "The mediastinum is not widened."])
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
                _choose(
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
            out["lungs"].append(_choose(rng, ["No focal consolidation.", "There is no focal consolidation."]))
    if "Edema" not in has and say(config.negative_rate * 0.6):
        out["lungs"].append(_choose(rng, ["No pulmonary edema.", "There is no pulmonary edema."]))
    if pleural_free and say():
        out["pleura"].append(
            _choose(
                rng,
                [
                    "No pleural effusion or pneumothorax.",
                    "There is no pleural effusion or pneumothorax.",
                    "No effusion or pneumothorax.",
                ],
            )
        )
    elif "Pleural Effusion" not in has and "Pneumothorax" in has and say():
        out["pleura"].append(_choose(rng, ["No pleural effusion.", "There is no pleural effusion."]))
    elif "Pneumothorax" not in has and "Pleural Effusion" in has and say():
        out["pleura"].append(_choose(rng, ["No pneumothorax.", "There is no pneumothorax."]))
    return _bones(findings, rng, config, out)


def _bones(findings: Findings, rng, config: SynthConfig, out: dict[str, list[str]]) -> dict[str, list[str]]:
    if "Fracture" not in findings.present and rng.random() < config.negative_rate * 0.6:
        out["bones"].append(
            _choose(
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
        from leadrrg.data.synth import SynthConfig

        config = SynthConfig()
    has = findings.present
    sections: dict[str, list[str]] = {"devices": [], "heart": [], "lungs": [], "pleura": [], "bones": []}
    if "Support Devices" in has:
        sections["devices"] = _devices(has["Support Devices"], rng, config)
    if "Cardiomegaly" in has:
        sections["heart"].append(_cardiomegaly(has["Cardiomegaly"], rng, config))
    if "Enlarged Cardiomediastinum" in has:
        sections["heart"].append(_mediastinum(has["Enlarged Cardiomediastinum"], rng, config))
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
        lungs.append(_consolidation(consolidation, rng, config, with_pneumonia=merged))
    if pneumonia is not None and not merged:
        lungs.append(_pneumonia(pneumonia, rng, config))
    for name, fn in (
        ("Lung Opacity", _lung_opacity),
        ("Lung Lesion", _lung_lesion),
        ("Edema", _edema),
        ("Atelectasis", _atelectasis),
    ):
        if name in has:
            lungs.append(fn(has[name], rng, config))
    rng.shuffle(lungs)
    for name, fn in (
        ("Pleural Effusion", _pleural_effusion),
        ("Pneumothorax", _pneumothorax),
        ("Pleural Other", _pleural_other),
    ):
        if name in has:
            sections["pleura"].append(fn(has[name], rng, config))
    if len(sections["pleura"]) > 1:
        rng.shuffle(sections["pleura"])
    if "Fracture" in has:
        sections["bones"].append(_fracture(has["Fracture"], rng, config))
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
