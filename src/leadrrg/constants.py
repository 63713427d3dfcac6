"""Labels and special tokens used across leadrrg."""

# The 14 CheXpert observations, in the CheXpert labeler's column order.
OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
NUM_OBSERVATIONS = len(OBSERVATIONS)

# The five observations most papers report clinical efficacy on.
CE5_OBSERVATIONS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)

# Labeler values (CheXpert convention); "not mentioned" is NaN in arrays and empty in CSV.
POSITIVE = 1.0
NEGATIVE = 0.0
UNCERTAIN = -1.0

# Special tokens of the from-scratch tokenizer. Pretrained backbones keep their own.
PAD_TOKEN = "<pad>"
BOS_TOKEN = "<bos>"
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)

# The text between the visual tokens and the report: `<bos> [visual] Findings: <report> <eos>`.
REPORT_PROMPT = "Findings:"

# Label-ignore value for token targets (PyTorch cross-entropy convention).
IGNORE_INDEX = -100

# Attributes of a finding (the patient's side, as reports state it). Cardiomegaly, Enlarged Cardiomediastinum and
# Support Devices have no side of their own; a device has no severity.
SIDES: tuple[str, ...] = ("right", "left", "bilateral")
SEVERITIES: tuple[str, ...] = ("mild", "moderate", "large")
SIDE_OBSERVATIONS: tuple[str, ...] = tuple(
    name
    for name in OBSERVATIONS
    if name not in ("No Finding", "Cardiomegaly", "Enlarged Cardiomediastinum", "Support Devices")
)
SEVERITY_OBSERVATIONS: tuple[str, ...] = tuple(
    name for name in OBSERVATIONS if name not in ("No Finding", "Support Devices")
)
