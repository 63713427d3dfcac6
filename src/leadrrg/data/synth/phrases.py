"""SynthCXR report phrases: the positive sentence for each observation, and the wording helpers.

One function per observation, `(finding, rng, config) -> sentence`, states it with its severity, side and
zone in one of several phrasings (`synth_reports.write_report` puts them together with the negatives).
Each sentence names only its own observation, so that a CheXpert-style labeler recovers the labels.
"""

from __future__ import annotations

import numpy as np

from leadrrg.data.synth.types import Finding, SynthConfig

__all__ = [
    "atelectasis",
    "cardiomegaly",
    "choose",
    "consolidation",
    "devices",
    "edema",
    "fracture",
    "lung_lesion",
    "lung_opacity",
    "mediastinum",
    "pleural_effusion",
    "pleural_other",
    "pneumonia",
    "pneumothorax",
]


def choose(rng: np.random.Generator, options: list[str] | tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _location(rng: np.random.Generator, side: str, zone: str) -> str:
    """Anatomic location words for a side and zone: 'right lower lobe', 'left base', 'lingula', ..."""
    if side == "bilateral":
        return {
            "upper": choose(rng, ["bilateral upper lobes", "both upper lungs", "bilateral upper lung zones"]),
            "middle": choose(rng, ["bilateral mid lungs", "both mid lung zones"]),
            "lower": choose(rng, ["bilateral lower lobes", "both lung bases", "bilateral lung bases"]),
        }[zone]
    if zone == "upper":
        return choose(rng, [f"{side} upper lobe", f"{side} upper lung", f"{side} upper lung zone"])
    if zone == "middle":
        if side == "right":
            return choose(rng, ["right middle lobe", "right mid lung", "right mid lung zone"])
        return choose(rng, ["lingula", "left mid lung", "left mid lung zone"])
    return choose(rng, [f"{side} lower lobe", f"{side} lung base", f"{side} base"])


def _basal(rng: np.random.Generator, side: str) -> str:
    return "bibasilar" if side == "bilateral" else choose(rng, [f"{side} basilar", f"{side} basal"])


def _hedge(rng: np.random.Generator, config: SynthConfig) -> bool:
    return bool(rng.random() < config.hedge_rate)


# --------------------------------------------------------------------------------------------------
# Positive sentences, one function per observation: (finding, rng, config) -> sentence
# (devices: one sentence per device)


def devices(f: Finding, rng, config) -> list[str]:
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
    return [choose(rng, bank[d]) for d in f.devices]


def cardiomegaly(f: Finding, rng, config) -> str:
    return choose(
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


def mediastinum(f: Finding, rng, config) -> str:
    return choose(
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


def lung_opacity(f: Finding, rng, config) -> str:
    loc = _location(rng, f.side, f.zone)
    plural = "opacities" if f.side == "bilateral" else "opacity"
    quality = {
        "mild": ["faint", "mild hazy", "subtle"],
        "moderate": ["hazy", "ill-defined", "patchy"],
        "large": ["extensive", "large confluent", "dense"],
    }[f.severity]
    q = choose(rng, quality)
    if _hedge(rng, config):
        return f"Possible {q} {plural} in the {loc}."
    return choose(
        rng,
        [
            f"{_cap(q)} {plural} in the {loc}.",
            f"There is {q} {plural} in the {loc}.",
            f"{_cap(q)} {loc} {plural}.",
        ],
    ).replace("There is extensive opacities", "There are extensive opacities")


def lung_lesion(f: Finding, rng, config) -> str:
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
    return choose(
        rng,
        [
            f"A {what} is seen in the {loc}.",
            f"There is a {what} in the {loc}.",
            f"{_cap(loc)} {noun} measuring {what.rsplit(' ', 1)[0]}.",
        ],
    )


def edema(f: Finding, rng, config) -> str:
    return choose(
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


def consolidation(f: Finding, rng, config, with_pneumonia: bool = False) -> str:
    loc = _location(rng, f.side, f.zone)
    quality = {
        "mild": ["small area of", "patchy", "focal"],
        "moderate": ["", "focal", "dense"],
        "large": ["dense lobar", "extensive", "lobar"],
    }[f.severity]
    q = choose(rng, quality)
    core = f"{q} consolidation".strip()
    if f.severity != "mild" and rng.random() < 0.4:
        core += " with air bronchograms"
    if _hedge(rng, config):
        if with_pneumonia:  # the consolidation is certain, its cause is hedged
            return f"{_cap(core)} in the {loc}, concerning for pneumonia."
        return f"Possible {core} in the {loc}."
    if with_pneumonia:
        tail = choose(
            rng, ["consistent with pneumonia", "compatible with pneumonia", "in keeping with pneumonia"]
        )
        return choose(rng, [f"{_cap(core)} in the {loc}, {tail}.", f"There is {core} in the {loc} {tail}."])
    return choose(
        rng, [f"{_cap(core)} in the {loc}.", f"There is {core} in the {loc}.", f"{_cap(loc)} {core}."]
    )


def pneumonia(f: Finding, rng, config) -> str:
    loc = _location(rng, f.side, f.zone)
    size = {"mild": "early ", "moderate": "", "large": "extensive "}[f.severity]
    if _hedge(rng, config):
        return choose(
            rng,
            [f"Findings concerning for {size}{loc} pneumonia.", f"{_cap(loc)} pneumonia cannot be excluded."],
        )
    return choose(
        rng,
        [
            f"Findings consistent with {size}{loc} pneumonia.",
            f"{_cap(size)}{loc} pneumonia.",
            f"There is {size}pneumonia in the {loc}.",
        ],
    )


def atelectasis(f: Finding, rng, config) -> str:
    where = _basal(rng, f.side)
    if f.severity == "large":
        lobe = "both lower lobes" if f.side == "bilateral" else f"the {f.side} lower lobe"
        return choose(rng, [f"Complete atelectasis of {lobe}.", f"Atelectasis of {lobe} with volume loss."])
    if _hedge(rng, config):
        return f"Probable {where} atelectasis."
    q = (
        choose(rng, ["mild", "minimal", "plate-like", "linear"])
        if f.severity == "mild"
        else choose(rng, ["moderate", "subsegmental", "streaky"])
    )
    if f.side == "bilateral":
        return choose(
            rng, [f"{_cap(q)} bibasilar atelectasis.", f"There is {q} atelectasis at both lung bases."]
        )
    return choose(
        rng,
        [
            f"{_cap(q)} {where} atelectasis.",
            f"{_cap(q)} atelectasis at the {f.side} lung base.",
            f"There is {q} atelectasis in the {f.side} base.",
        ],
    )


def pneumothorax(f: Finding, rng, config) -> str:
    size = {"mild": "small", "moderate": "moderate", "large": "large"}[f.severity]
    apical = " apical" if f.severity == "mild" and rng.random() < 0.6 else ""
    sentence = choose(
        rng,
        [f"{_cap(size)} {f.side}{apical} pneumothorax.", f"There is a {size} {f.side}{apical} pneumothorax."],
    )
    if rng.random() < 0.3:
        sentence += " The visceral pleural line is visible."
    return sentence


def pleural_effusion(f: Finding, rng, config) -> str:
    size = {"mild": choose(rng, ["small", "small"]), "moderate": "moderate", "large": "large"}[f.severity]
    if f.side == "bilateral":
        return choose(
            rng,
            [f"{_cap(size)} bilateral pleural effusions.", f"There are {size} bilateral pleural effusions."],
        )
    if f.severity == "mild" and rng.random() < 0.35:
        return f"Blunting of the {f.side} costophrenic angle consistent with a small pleural effusion."
    return choose(
        rng,
        [
            f"{_cap(size)} {f.side} pleural effusion.",
            f"There is a {size} {f.side} pleural effusion.",
            f"{_cap(size)} {f.side}-sided pleural effusion.",
        ],
    )


def pleural_other(f: Finding, rng, config) -> str:
    where = {"right": "right", "left": "left", "bilateral": "bilateral"}[f.side]
    kind = "apical " if f.zone == "upper" else choose(rng, ["lateral ", ""])
    q = {"mild": "mild ", "moderate": "", "large": "marked "}[f.severity]
    return choose(
        rng, [f"{_cap(q)}{where} {kind}pleural thickening.", f"There is {q}{where} {kind}pleural thickening."]
    )


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def fracture(f: Finding, rng, config) -> str:
    side = f.side if f.side != "bilateral" else "right"
    rib = int(rng.integers(4, 9))
    if f.severity == "large":
        return choose(
            rng,
            [
                f"Multiple {side} rib fractures.",
                f"Fractures of the {side} {_ordinal(rib)} through {_ordinal(rib + 2)} ribs.",
            ],
        )
    kind = "nondisplaced" if f.severity == "mild" else choose(rng, ["displaced", "acute displaced"])
    return choose(
        rng,
        [
            f"There is a {kind} fracture of the {side} {_ordinal(rib)} rib.",
            f"{_cap(kind)} {side} {_ordinal(rib)} rib fracture.",
            f"{_cap(kind)} fracture of the {side} lateral {_ordinal(rib)} rib.",
        ],
    )
