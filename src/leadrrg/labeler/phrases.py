"""Mention phrases and negation/uncertainty cues of the rule-based labeler, as regex sources.

All patterns apply to normalised text (see `rules.normalize`): lower case, one sentence per line,
de-identification tokens as `xxxx`. The lists started from the CheXpert / NegBio phrase files as
shipped in the MIT-licensed radtext package (notice in `resources/NOTICE-radtext.txt`) and were
rewritten for regex matching, with these deliberate departures from CheXpert, chosen to match how
radiologists index reports (the IU X-Ray MeSH annotations):

- scarring, fibrosis, interstitial markings and costophrenic blunting are *other findings* (they
  make No Finding blank) rather than Lung Opacity / Pleural Other;
- surgical clips, stents and sternotomy wires are *other findings*, not Support Devices; the
  devices are lines, tubes, catheters, pacemakers, leads, ports, valves and drains;
- calcified nodules count as Lung Lesion, also when the report explains them as granulomas ("nodule
  ... suggests a previous granulomatous process"); granulomas named as such do not (other finding);
- pleural thickening (apical capping and thickened fissures included) is Pleural Other; pleural and
  pleuroparenchymal scarring are other findings, as costophrenic blunting is;
- "infection" / "infectious process" without the word pneumonia is at most uncertain Pneumonia
  (`WEAK_MENTIONS`); CheXpert counts it positive;
- "probable" / "probably" (more likely than not) do not hedge: the indexers annotate probable findings,
  while "likely", "possible", "may", "suggest", ... stay uncertain as in CheXpert;
- a sentence-level hedge ("in the appropriate clinical setting") makes every positive mention of its
  sentence uncertain, whatever the clause; "age-indeterminate" hedges a finding's age, not the finding;
- borderline heart size / cardiomegaly / enlargement is Cardiomegaly positive (CheXpert: uncertain);
- healed / old fractures are Fracture positive;
- an enlarged cardiomediastinal or cardiac silhouette is Cardiomegaly; a widened or prominent
  mediastinum is Enlarged Cardiomediastinum.

`scripts/eval_labeler_iu.py` scores these rules against the MeSH annotations of the shared IU X-Ray reports.
"""

from __future__ import annotations

# Gap of up to N words on one line (no sentence punctuation crossed).
WORD = r"[a-z0-9/'-]+"


def gap(max_words: int) -> str:
    return rf"(?:[ ,]+{WORD}){{0,{max_words}}}?[ ,]+"


# --------------------------------------------------------------------------------------------------
# Plain mentions: observation -> (include regex, exclude regex or None). A match inside an exclude
# match does not count.

PLAIN_MENTIONS: dict[str, tuple[str, str | None]] = {
    "Enlarged Cardiomediastinum": (
        r"\b(?:widen(?:ed|ing)|enlarge(?:d|ment)|prominen(?:t|ce))(?: of)?(?: the)?(?: superior)?"
        r" mediastin(?:um|al (?:contours?|silhouette|shadow|width))\b"
        r"|\bmediastinal (?:widening|enlargement|prominence)\b|\bwide mediastinum\b",
        None,
    ),
    "Cardiomegaly": (r"\bcardiomegaly\b|\bcardiac enlargement\b", None),
    "Lung Opacity": (
        r"\bopaci(?:ty|ties|fication|fications|fied)\b|\binfiltrat(?:e|es|ion|ions|ive)\b"
        r"|\bair[ -]?space (?:disease|process|filling)\b|\bairspace opaci"
        r"|\bdensit(?:y|ies)\b|\bhaz(?:e|iness|y)\b|\bground[ -]glass\b|\bdecreased translucency\b",
        # bone density, soft-tissue density, "low density" fat, etc.
        r"\b(?:bone|bony|soft[ -]tissue|metallic|calcific|calcified|fat|fluid|low|water) densit"
        r"|\bdensit(?:y|ies)(?: of| in| over| projecting over)?(?: the)? (?:bones?|soft tissues?|spine|breasts?)\b"
        r"|\bbreast densit|\bnipple|\bdensity of the (?:heart|spine)",
    ),
    "Lung Lesion": (
        r"\bnodul(?:e|es|arity)\b|\bmass(?:es|like)?\b|\bcavitary lesion\b"
        r"|\bcavitation\b|\btumou?r\b|\bcarcinoma\b|\bneoplasm\b|\bmalignan(?:cy|t)\b|\bmetasta(?:sis|ses|tic)\b"
        r"|\blung lesions?\b|\bpulmonary lesions?\b",
        r"\bmass effect\b|\bmassive\b|\bsoft[ -]tissue mass\b|\bbreast mass|\bbody mass\b|\bmuscle mass\b"
        r"|\bnodular interstitial\b",
    ),
    "Edema": (
        r"\bedema\b|\boedema\b|\b(?:vascular|pulmonary|venous) congestion\b|\bcongestive (?:heart )?failure\b"
        r"|\bchf\b|\bheart failure\b|\bfluid overload\b|\bvolume overload\b|\bkerley\b"
        r"|\bvascular (?:prominence|indistinctness|redistribution)\b|\bcongestive changes?\b"
        r"|\bindistinct (?:central )?(?:pulmonary )?vascula(?:r|ture)\b",
        r"\bsoft[ -]tissue (?:edema|swelling)\b|\b(?:subcutaneous|chest wall|extremity|facial) edema\b",
    ),
    "Consolidation": (r"\bconsolidat(?:ion|ions|ed|ive)\b", None),
    "Pneumonia": (
        r"\b(?:broncho)?pneumonias?\b|\bpneumonitis\b|\bpneumonic\b",
        # healed granulomatous / tuberculous infection is a scar, not pneumonia
        r"\b(?:granulomatous|tuberculous|tuberculosis|fungal|histoplasm\w*|mycobacterial) (?:\w+ )?(?:infection|pneumonia)s?\b"
        r"|\b(?:prior|previous|old|remote|past|healed|history of|sequelae of|residuals? of) (?:\w+ ){0,2}(?:infection|pneumonia)s?\b",
    ),
    "Atelectasis": (
        r"\batelecta\w*|\b(?:lung|lobe|lobar|segmental|lobular) collapse\b"
        r"|\bcollapse(?:d)? (?:of )?(?:the )?(?:right |left )?(?:upper |middle |lower )?(?:lung|lobe)\b",
        None,
    ),
    "Pneumothorax": (r"\b(?:hydro)?pneumothora(?:x|ces)\b|\bptx\b|\bpleural air\b", None),
    "Pleural Effusion": (
        r"\beffusions?\b|\bpleural fluid\b|\bhydrothorax\b|\bfluid in the (?:major |minor )?fissure",
        r"\b(?:pericardial|joint|knee|shoulder) effusion",
    ),
    "Pleural Other": (
        r"\bpleural (?:thickening|plaques?|calcifications?|abnormality|abnormalities|reaction)\b"
        r"|\bpleuro-?parenchymal thickening\b|\bfibrothorax\b|\bapical (?:pleural )?(?:capping|thickening)\b"
        r"|\bthicken(?:ing|ed) of the (?:\w+ )?(?:pleura|fissures?)\b|\bthickened (?:\w+ )?(?:pleura|fissures?)\b"
        r"|\b(?:fissural|fissure) thickening\b|\bpleural based\b|\bpleural[- ]based\b",
        None,
    ),
    "Fracture": (
        r"\bfractur(?:e|es|ed|ing)\b|\bfx\b|\bbroken (?:\w+ ){0,3}(?:ribs?|clavicles?|bones?)\b",
        None,
    ),
    "Support Devices": (
        r"\b(?:pace ?makers?|pacers?|pacing (?:leads?|wires?|device)|icd|aicd|defibrillator|picc|"
        r"catheters?|cath|cvc|central (?:venous )?line|(?:iv|ij|subclavian|jugular|midline|swan-ganz|arterial) lines?"
        r"|lines?|tubes?|(?:et|ng|og|nasogastric|orogastric|endotracheal|tracheostomy|chest|feeding|"
        r"dobhoff|gastrostomy) tubes?|tracheostomy|drains?|port-?a-?cath|mediport|port|leads|"
        r"(?:monitor|ekg|ecg|electrocardiogram) leads|electrodes?|generator|devices?|hardware|"
        r"(?:valve|valvular) (?:replacement|prosthesis)|prosthetic (?:\w+ )?valves?|valve replacement|"
        r"cannula|balloon pump|iabp|impella|lvad|sheath|stimulator|loop recorder|hemodialysis catheter|"
        r"closure device|enteric tube|tubing|\w*stimulators?|bone anchors?|markers?|implantable \w+|shunt|"
        r"tips? (?:is |are )?(?:visualized |identified |seen |noted |located )?(?:in|at|over|overl\w*|project\w*"
        r"|terminat\w*|within|near|positioned|extends?))\b",
        r"\bcardiac (?:contour|silhouette) lines?\b|\b(?:septal|kerley(?: b)?|fissure|azygoesophageal|paraspinal|"
        r"paratracheal|pleural|skin|pleural reflection|mid|midclavicular|anterior junction|posterior junction)"
        r" lines?\b|\blines? of (?:the )?\w+|\blines? ?(?:of|up)\b|\bplate-?like|\bdiscoid|\blinear\b"
        r"|\bguidelines?\b|\b(?:eustachian|fallopian|bronchial|endobronchial|neural) tubes?\b|\bcolon\b"
        r"|\bdevices? (?:are|is) (?:seen|noted)? ?outside\b|\bport(?:ion|able|al)\b|\bprosthetic joint",
    ),
}

# Weak mentions: observation -> regex. They name the observation only as a possibility, so a weak
# mention is at most uncertain (a positive one counts as -1). "Infection" / "infectious process" name a
# process, not the diagnosis: the IU X-Ray indexers annotate Pneumonia for named pneumonia only.
WEAK_MENTIONS: dict[str, str] = {
    "Pneumonia": r"infection|infectious|infective",  # plain alternatives, joined inside \b(?P<weak>...)\b
}

# Findings outside the 14 observations: positive or uncertain ones make No Finding blank (CheXpert
# keeps such a list too), negated ones do not.
OTHER_FINDINGS = (
    r"\bemphysema\w*|\bcopd\b|\bchronic obstructive\b|\bhyperinflat\w*|\bhyperexpan\w*|\bhyperlucen\w*"
    r"|\bover-?inflat\w*|\bover-?expan\w*|\bgranulom\w*|\bcalcifi\w*|\bcalcinosis\b|\b(?:dextro|levo|rotoscolio|thoracolumbar )?scolio(?:sis|tic)\b"
    r"|\bkyphosis\b|\bkyphotic\b|\bdegenerat\w*|\bspondylo\w*|\bosteophyt\w*|\barthrit\w*|\barthropath\w*"
    r"|\bdeformit\w*|\bhernia\w*|\beventration\b|\belevat(?:ed|ion) (?:of )?(?:the )?(?:right |left )?"
    r"(?:hemi)?diaphragm|\b(?:hemi)?diaphragm\w* (?:is |are )?elevat\w*|\btortu\w*|\bectatic\b|\bectasia\b"
    r"|\baneurysm\w*|\batheroscleros\w*|\batherosclerotic\b|\bscar(?:s|ring|red)?\b|\bcicatri\w*|\bfibros\w*"
    r"|\bfibrotic\b|\binterstitial (?:markings|prominence|changes?|disease|lung disease|pattern|thickening)\b"
    r"|\b(?:increased|prominent|coarse(?:ned)?|accentuated) (?:\w+ )?markings\b|\bmarkings (?:are|is) (?:increased|prominent|coarse)"
    r"|\blow lung volumes?\b|\b(?:decreased|reduced|diminished) lung volumes?\b|\bhypoinflat\w*|\bhypoventilat\w*"
    r"|\bpoor inspiration\b|\bshallow inspiration\b|\bbronchit\w*|\bbronchiectas\w*|\bbronchiolit\w*"
    r"|\bperibronchial (?:cuffing|thickening)\b|\bairways? disease\b|\bblunt\w*|\bvolume loss\b|\bosteopeni\w*"
    r"|\bdemineraliz\w*|\bsurgical clips?\b|\bclips?\b|\bsternotomy\b|\bcabg\b|\bpost-?surgical\b|\bpost-?operative\b"
    r"|\bstents?\b|\bcholecystectomy\b|\bmastectomy\b|\bpneumonectomy\b|\blobectomy\b|\bresection\b|\bcysts?\b|\bcystic\b"
    r"|\bbullae\b|\bbulla\b|\bbullous\b|\bblebs?\b|\bforeign bod\w*|\bshrapnel\b|\bbullet\b|\bcephalization\b"
    r"|\bpneumomediastinum\b|\bpneumoperitoneum\b|\bfree air\b|\blucenc\w*|\blymphadenopathy\b|\badenopathy\b"
    r"|\benlarged (?:\w+ )?(?:lymph nodes|hila|hilum)\b|\bhilar (?:enlargement|prominence|fullness)\b"
    r"|\bprominen(?:t|ce)(?: of)?(?: the)? (?:\w+ )?hil(?:a|um|ar)\b|\bsarcoid\w*|\btuberculosis\b|\btb\b"
    r"|\bdislocat\w*|\bspinal fusion\b|\bfusion\b|\bimplants?\b|\bsclero\w*|\blesions?\b|\bcardiac (?:valve|annul\w*)"
    r"|\bscarring\b|\bunfolded aorta\b|\bunfolding\b|\baortic (?:knob|arch)? ?calcif\w*|\bpectus\b|\bcardiac silhouette (?:is |appears )?irregular"
    r"|\birregular\w*|\bsubsegmental\b|\bcrowding\b|\bthickening\b|\bvascular (?:calcification|prominence)"
    r"|\bemphysematous\b|\bchronic (?:lung|interstitial) disease\b|\bpulmonary hypertension\b|\bhematoma\b"
    r"|\bcontusion\b|\baspiration\b|\bcurvature\b|\bprosthes[ie]s\b|\bsutures?\b|\bpiercings?\b|\bnipple rings?\b"
    r"|\bhyperaerat\w*|\bdish\b|\bhyperostosis\b|\b(?:aortic )?dissection\b|\bendplate\b|\bepicardial fat\b|\bflatten\w*|\b\bmetastat\w*|\bamputat\w*|\bpersistent\b(?= (?:density|opacity|finding))"
)

# --------------------------------------------------------------------------------------------------
# Size statements about the heart and the mediastinum: an anchor plus a status word on the same line.

HEART_ANCHOR = (
    r"(?:heart(?: size)?|cardiac (?:silhouette|size|shadow|contours?|diameter|configuration)"
    r"|cardiomediastinal (?:silhouette|contours?|shadow|size|structures)|cardiopericardial silhouette"
    r"|size of the (?:heart|cardiac silhouette)|heart silhouette|cardiothoracic ratio)"
)
MEDIASTINUM_ANCHOR = (
    r"(?:(?:superior )?mediastin(?:um|al (?:silhouette|contours?|shadow|width|structures))|mediastinal and hilar contours"
    r"|hilar and mediastinal contours)"
)
STATUS_NEGATIVE = (
    r"(?:normal|unremarkable|within normal limits|wnl|not (?:\w+ ){0,2}(?:enlarged|widened|prominent|increased)"
    r"|no longer (?:\w+ )?enlarged|upper limits? of normal|upper normal|high normal|top normal|top-normal"
    r"|(?:is|are) (?:\w+ )?stable in size and normal|negative)"
)
STATUS_UNCERTAIN = (
    r"(?:possibly (?:\w+ )?(?:enlarged|widened)|may be (?:\w+ )?(?:enlarged|widened)|equivocal)"
)
STATUS_POSITIVE = (
    r"(?:borderline|enlarge(?:d|ment)|large|increased|widen(?:ed|ing)|wide|prominen(?:t|ce)|dilated|dilatation"
    r"|magnified|globular)"
)

# --------------------------------------------------------------------------------------------------
# Statements that deny an observation without naming its mention phrases.

NEGATIVE_STATEMENTS: dict[str, str] = {
    "Lung Opacity": r"\blungs? (?:are |is |appear |remain )?(?:\w+ )?clear\b|\bclear lungs?\b",
}

# --------------------------------------------------------------------------------------------------
# Cues. Double negations are found first and are uncertain; their words then cue nothing else.

DOUBLE_NEGATION = (
    r"\bcannot (?:be )?(?:entirely |completely |totally |definitely |fully |confidently )?(?:exclude|excluded|rule[ds]? out|ruled out)\b"
    r"|\bcan ?not (?:be )?(?:entirely |completely )?(?:exclude|excluded)\b"
    r"|\bcould not (?:be )?(?:entirely |completely )?(?:exclude|excluded|rule out|ruled out)\b"
    r"|\b(?:is|are|was|were)? ?not (?:entirely |completely |totally |definitely |excluded|ruled out)(?:excluded|ruled out)?\b"
    r"|\b(?:difficult|unable|impossible|hard) to (?:entirely |completely |totally |definitively )?(?:exclude|rule out)\b"
    r"|\bno evidence to rule out\b|\bnot (?:be )?(?:entirely |completely )?excluded\b"
)

PRE_NEGATION = (
    r"\bno\b|\bnot\b|\bwithout\b|\bnegative for\b|\bfree of\b|\bclear of\b|\babsence of\b|\babsent\b"
    r"|\bresol(?:ved|ution of|ving)\b|\bremoval of\b|\brather than\b|\bno longer\b|\bnor\b|\bneither\b"
    r"|\bexclude[sd]?\b|\bruled out\b|\bdenies\b|\bclearing of\b|\bdisappearance of\b|\binstead of\b"
    r"|\bfailed to (?:show|demonstrate|reveal)\b|\bnone\b"
)
POST_NEGATION = (
    r"\b(?:is|are|was|were|has|have|had)? ?(?:been |since been )?(?:resolved|removed|cleared|withdrawn)\b"
    r"|\b(?:is|are|was|were|be)? ?not (?:\w+ )?(?:seen|identified|visualized|visible|present|demonstrated|evident"
    r"|appreciated|noted|detected|shown|apparent|observed|well[- ]seen|well[- ]visualized)\b|\bno longer (?:\w+ )?(?:seen|present|visible|evident|identified)\b"
    r"|\b(?:is|are) absent\b|\bhas resolved\b|\bresolved\b|\bnegative\b|\b(?:is|are|was|were) excluded\b"
)
# Negation words that negate nothing ("no change in the nodule"): they mask the negation cues they contain.
PSEUDO_NEGATION = (
    r"\bno (?:significant |appreciable |substantial |definite |marked )?(?:interval )?(?:change|increase|decrease"
    r"|progression|worsening|improvement|enlargement)\b|\bwithout (?:significant |interval )?change\b"
    r"|\bnot (?:significantly )?changed\b|\bnot only\b|\bnot? (?:been )?improved?\b|\bno other\b(?= changes?)"
)
# Hedge words that qualify something other than the finding's presence ("age-indeterminate fracture": the
# fracture is there, its age is uncertain): they mask the uncertainty cues they contain.
PSEUDO_UNCERTAINTY = r"\bage[- ]?(?:indeterminate|uncertain|undetermined)\b"
PRE_UNCERTAINTY = (
    r"\bmay\b|\bmight\b|\bcould\b|\bpossibl[ey]\b|\blikely\b|\bmost xxxx\b|\bsuspect\w*|\bsuspicious\b"
    r"|\bsuggest\w*|\bconcern\w*|\bquestion\w*|\bqmark\b|\bequivocal\b|\bindeterminate\b|\bdifferential\b"
    r"|\bconsider\w*|\bvs\b|\bversus\b|\bworrisome\b|\bpresum\w*|\bpotential\w*|\buncertain\b"
    r"|\bunclear\b|\bpuzzling\b|\bperhaps\b|\bcannot be assessed\b|\bnot (?:well |fully )?(?:assessed|evaluated)\b"
    r"|\bevaluat(?:e|ion) for\b|\brule out\b|\br/o\b|\bto exclude\b"
    r"|\bdoubtful\b|\bfavor\w*|\bmimic\w*|\b(?:in|with) the (?:appropriate|correct|right|proper) clinical (?:setting|context)\b"
    r"|\bcorrelat\w* (?:clinically )?for\b|\bclinical correlation\b|\bto (?:identify|evaluate for|assess for|exclude)\b"
)
POST_UNCERTAINTY = (
    r"\b(?:is|are) (?:also )?(?:possible|suspected|questioned|favored|likely|not excluded)\b"
    r"|\bversus\b|\bvs\b|\bqmark\b"
    r"|\bmay (?:be|represent|reflect|indicate)\b|\bcould (?:be|represent|reflect|indicate)\b|\bif (?:any|present)\b"
    r"|\bcannot be (?:entirely )?(?:excluded|ruled out)\b|\bnot (?:entirely )?(?:excluded|ruled out)\b"
    r"|\bmight (?:be|represent)\b|\bis suspected\b"
)

# Hedges that qualify the whole sentence, whatever the clause: "In the appropriate clinical setting, this
# is compatible with pneumonia", "this appearance is compatible with pneumonia in the right clinical
# context". A positive mention in such a sentence is uncertain.
SENTENCE_UNCERTAINTY = (
    r"\b(?:in|with) the (?:appropriate|correct|right|proper) clinical (?:setting|context|scenario)\b"
    r"|\bin the (?:appropriate|correct|right|proper) setting\b"
)

# Words that close the scope of a cue inside a sentence.
SCOPE_BREAK = (
    r"\bbut\b|\bhowever\b|\balthough\b|\bthough\b|\bexcept\b|\baside from\b|\bapart from\b|\bwhich\b"
    r"|\bwhereas\b|\bwhile\b|\byet\b|\botherwise\b|\bthere (?:is|are|has|have)\b(?! no\b)|\bin addition\b"
    r"|\bnow\b|\balso\b|\bsecondary to\b|\bdue to\b|\bconsistent with\b|\bcompatible with\b"
    r"|\b[,;] ?(?:and )?(?=(?:mild(?:ly)?|moderate(?:ly)?|severe(?:ly)?|stable|persistent|new|increas\w*|decreas\w*"
    r"|there|the|heart|lungs?|cardiomegaly|unchanged|again|status|s/p|possible|probable|likely|improv\w*|worse\w*"
    r"|healed|old|chronic|remote)\b)"
    r"|\b(?:and|with) (?=(?:mild(?:ly)?|moderate(?:ly)?|severe|small|minimal|trace|stable|persistent|new|increas\w*"
    r"|decreas\w*|there|the|bilateral|patchy|chronic|old|healed|heart|unchanged|again)\b)"
)
