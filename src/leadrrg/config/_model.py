"""Model configs: vision encoder, experts, injection, grounding, decoder, composed into `ModelConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from leadrrg.config._checks import _check_choice, _check_positive, _check_range
from leadrrg.constants import OBSERVATIONS
from leadrrg.errors import LeadrrgError

# Each choice is written once, as a Literal; its tuple (for checks and messages) is derived from it.
ExpertReadout = Literal["query", "query_max"]
Fusion = Literal["layerwise", "input", "aux", "none"]
Projection = Literal["per_layer", "shared"]
Gate = Literal["dynamic", "static", "open"]
Confidence = Literal["mixture", "explicit", "product", "none"]
Dtype = Literal["float32", "bfloat16", "float16"]
AttnImplementation = Literal["auto", "eager", "sdpa", "flash_attention_2"]
Balance = Literal["none", "context"]
LabelPolicy = Literal["ones", "ignore"]

EXPERT_READOUTS: tuple[ExpertReadout, ...] = get_args(ExpertReadout)
FUSIONS: tuple[Fusion, ...] = get_args(Fusion)
PROJECTIONS: tuple[Projection, ...] = get_args(Projection)
GATES: tuple[Gate, ...] = get_args(Gate)
CONFIDENCES: tuple[Confidence, ...] = get_args(Confidence)
DTYPES: tuple[Dtype, ...] = get_args(Dtype)
ATTN_IMPLEMENTATIONS: tuple[AttnImplementation, ...] = get_args(AttnImplementation)
BALANCES: tuple[Balance, ...] = get_args(Balance)
LABEL_POLICIES: tuple[LabelPolicy, ...] = get_args(LabelPolicy)


@dataclass
class VisionConfig:
    # vision-encoder registry key: cnn_small, vit_small, hf (a local transformers model)
    name: str = "cnn_small"
    pretrained_path: str | None = None  # local directory of a transformers vision model (name "hf")
    image_size: int = 128  # square input side in pixels
    channels: int = 1  # input channels; grayscale radiographs are repeated to 3 for RGB encoders
    mean: float = 0.5  # per-channel normalisation applied after scaling pixels to [0, 1]: (x - mean) / std
    std: float = 0.25  # the divisor of that normalisation (> 0)
    hidden_size: int = 128  # Dv, width of the vision tokens
    num_layers: int = 4  # depth of the from-scratch encoders
    num_heads: int = 4  # attention heads (vit_small)
    patch_size: int = 16  # patch side (vit_small)
    freeze: bool = False  # keep a pretrained encoder frozen

    def __post_init__(self) -> None:
        for name in ("image_size", "channels", "hidden_size", "num_layers", "num_heads", "patch_size"):
            _check_positive("model.vision", name, getattr(self, name))
        _check_positive("model.vision", "std", self.std)
        _check_range("model.vision", "mean", self.mean, -1e6, 1e6)


@dataclass
class ExpertConfig:
    names: list[str] = field(default_factory=lambda: list(OBSERVATIONS))  # one expert per observation
    hidden_size: int = 128  # De, width of an expert feature
    num_heads: int = 4  # heads of the experts' cross-attention over vision tokens
    mlp_ratio: float = 2.0  # per-expert MLP width as a multiple of De
    readout: ExpertReadout = "query_max"  # query: each expert reads only its attended vision feature (the
    # paper) | query_max: each expert also reads the vision tokens' max-pooled feature (the strongest local
    # evidence)
    attributes: bool = True  # each expert also predicts its finding's side (right / left / bilateral) and
    # severity (mild / moderate / large), and the decoder reads them with p (model/injection.py). False: the
    # paper's presence-only experts

    def __post_init__(self) -> None:
        if not self.names:
            raise LeadrrgError("model.experts.names is empty; expected at least one expert name")
        _check_choice("model.experts", "readout", self.readout, EXPERT_READOUTS)
        _check_positive("model.experts", "hidden_size", self.hidden_size)
        _check_positive("model.experts", "num_heads", self.num_heads)
        _check_positive("model.experts", "mlp_ratio", self.mlp_ratio)
        duplicates = sorted({name for name in self.names if self.names.count(name) > 1})
        if duplicates:
            raise LeadrrgError(f"model.experts.names repeats {duplicates}; expected each expert once")
        if self.hidden_size % self.num_heads:
            raise LeadrrgError(
                f"model.experts.hidden_size ({self.hidden_size}) must be divisible by model.experts.num_heads ({self.num_heads})"
            )

    @property
    def num_experts(self) -> int:
        return len(self.names)


@dataclass
class InjectionConfig:
    fusion: Fusion = "layerwise"  # layerwise (LEAD) | input (expert tokens as extra input tokens) |
    # aux (experts trained with the classification loss, nothing fused: the LVLM + classifier baseline) |
    # none (plain LVLM, no experts)
    projection: Projection = "per_layer"  # per_layer: a W^l per decoder layer | shared: one W for all layers
    gate: Gate = "dynamic"  # dynamic: per-token gate | static: one learned scalar per layer | open: g = 1
    confidence: Confidence = "explicit"  # explicit: p*(e+u) + (1-p)*a (default) | mixture: p*e + (1-p)*a
    # (the paper's) | product: p*e | none: e
    rank: int = 0  # 0: full-rank W^l; r > 0: W^l = U^l V with a shared V (for 7B-class decoders)
    gate_bias_init: float = 0.0  # initial gate bias b_g (sigmoid(0) = 0.5); W^l starts at zero regardless

    def __post_init__(self) -> None:
        _check_choice("model.injection", "fusion", self.fusion, FUSIONS)
        _check_choice("model.injection", "projection", self.projection, PROJECTIONS)
        _check_choice("model.injection", "gate", self.gate, GATES)
        _check_choice("model.injection", "confidence", self.confidence, CONFIDENCES)
        _check_positive("model.injection", "rank", self.rank, allow_zero=True)
        _check_range("model.injection", "gate_bias_init", self.gate_bias_init, -1e3, 1e3)

    @property
    def has_experts(self) -> bool:
        """The model has pathology experts (every fusion but `none`)."""
        return self.fusion != "none"

    @property
    def decoder_reads_experts(self) -> bool:
        """The decoder reads the experts' evidence (`layerwise` or `input`), so grounding policy applies."""
        return self.fusion in ("layerwise", "input")

    @property
    def layerwise(self) -> bool:
        """LEAD: expert tokens enter every decoder layer through a gate."""
        return self.fusion == "layerwise"


@dataclass
class DecoderConfig:
    backbone: str = "llama"  # backbone registry key: llama, qwen2, mistral, gpt2
    pretrained_path: str | None = None  # local directory of a pretrained causal LM; None trains from scratch
    hidden_size: int = 128  # D (from scratch, as are the four below)
    num_layers: int = 4  # decoder layers
    num_heads: int = 4  # attention heads
    num_kv_heads: int = 4  # key/value heads (grouped-query attention when fewer than num_heads)
    intermediate_size: int = 352  # width of each layer's MLP
    max_positions: int = 512  # visual tokens + prompt + report
    vocab_size: int = 2000  # target size of the from-scratch BPE tokenizer
    dropout: float = 0.0  # from-scratch decoder dropout (attention; gpt2 also embeddings, residuals)
    lora_r: int = 16  # LoRA rank on attention and MLP projections (pretrained only); 0 trains the LLM fully
    lora_alpha: int = 32  # LoRA scaling numerator: the adapter's update is scaled by lora_alpha / lora_r
    lora_dropout: float = 0.05  # dropout on the LoRA adapters' input, in [0, 1)
    gradient_checkpointing: bool = False  # recompute the decoder's activations in the backward pass
    load_dtype: Dtype = "float32"  # dtype of pretrained weights: float32 | bfloat16 | float16 (autocast
    # does the rest)
    attn_implementation: AttnImplementation = "auto"  # auto (transformers' choice) | eager | sdpa |
    # flash_attention_2 (needs CUDA)

    def __post_init__(self) -> None:
        for name in (
            "hidden_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "intermediate_size",
            "max_positions",
        ):
            _check_positive("model.decoder", name, getattr(self, name))
        _check_positive("model.decoder", "lora_r", self.lora_r, allow_zero=True)
        _check_positive("model.decoder", "lora_alpha", self.lora_alpha)
        _check_positive("model.decoder", "vocab_size", self.vocab_size)
        _check_range("model.decoder", "dropout", self.dropout, 0.0, 1.0, high_open=True)
        _check_range("model.decoder", "lora_dropout", self.lora_dropout, 0.0, 1.0, high_open=True)
        _check_choice("model.decoder", "load_dtype", self.load_dtype, DTYPES)
        _check_choice("model.decoder", "attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise LeadrrgError(
                f"model.decoder.hidden_size ({self.hidden_size}) must be divisible by model.decoder.num_heads ({self.num_heads}), "
                f"and num_heads by model.decoder.num_kv_heads ({self.num_kv_heads})"
            )


@dataclass
class GroundingConfig:
    """How the experts are trained and what the decoder is told during training (docs/FAITHFULNESS.md).

    The paper's recipe (preset `lead_paper`) is truth_forcing=0, detach_experts=false, expert_warmup_steps=0,
    counterfactual=0: the decoder reads the experts' own probabilities and the LM loss trains the experts. The default
    makes the channel count: the experts learn the image first (stage 1), the decoder learns that p means what it
    says (truth forcing) and that it must follow p where the image says otherwise (counterfactual studies).
    Switches that need experts (stage 1) or a decoder that reads them (counterfactual studies) do nothing for a
    model without (fusion=none; aux for counterfactual)."""

    truth_forcing: float = 1.0  # share of training studies whose decoder reads the ground-truth labels as p
    # (PromptMRG-style); the rest read the experts' own p. 0: always their own (the paper)
    truth_jitter: float = 0.0  # forced truth is softened to p ~ U(1 - j, 1) (present) / U(0, j) (absent), so
    # the decoder learns the experts' threshold (p > 0.5 means present) on soft probabilities like theirs; 0: 0/1
    detach_experts: bool = True  # stop the LM loss at the expert features and probabilities: only L_cls
    # trains the experts (two-stage classifiers as in RaDialog / CCD, in one pass)
    expert_warmup_steps: int = 600  # stage 1: steps of the vision encoder + experts alone on L_cls before
    # joint training (train/expert_warmup.py); 0: joint training only (the paper)
    expert_warmup_augment: bool = True  # stage 1 augments its images when data.augment does; false: stage 1
    # reads them as stored (sharper small signs for the experts) and only the joint stage augments
    detach_vision: bool = False  # stop the LM loss at the vision tokens too: only L_cls trains the vision
    # encoder (the decoder's visual prompt still goes through its trainable projector); needs experts
    balance: Balance = "none"  # expert BCE weights: none | context (each expert's label made independent of
    # the other labels of the training data by inverse propensity weights: exclusive samples count more)
    balance_clip: float = 10.0  # context weights are clipped to [1 / clip, clip]
    visual_dropout: float = 0.0  # share of training studies whose visual prompt tokens are masked out, so
    # that the decoder must write their findings from the experts (modality dropout: the gated path is the way in)
    counterfactual: float = 0.8  # share of training studies whose decoder reads the truth with one finding
    # flipped, against a report edited to match (data/counterfactual.py): p disagrees with the image, and the
    # target follows p. 0: off
    side_flip: float = 0.2  # share of training studies (of those not already counterfactual) whose report has
    # one lateral finding's side swapped (left <-> right) and whose decoder reads the swapped side: the side a
    # report states must come from the experts' side evidence (model.experts.attributes). 0: off
    hedge: bool = (
        True  # the decoder reads a finding the target report hedges ("possible small left effusion":
    )
    # uncertain to the labeler) as p = 1/2, between absent (0) and present (1), so it learns to hedge what it reads
    # as 1/2; decoding reads 1/2 for p in the uncertainty band below each threshold (decode.hedge_band). false:
    # hedged findings read as the label policy says (present under `ones`)
    hedge_edit: float = 0.0  # with hedge: share of training studies whose report has one asserted finding
    # restated by a hedged sentence of the training reports (data/counterfactual.py), read as 1/2. 0 (default): only
    # the hedges the reports already contain; 0.2 raised hallucination and lowered CIDEr on a selection prior's val
    # split without teaching reliable hedges (docs/FAITHFULNESS.md)

    def __post_init__(self) -> None:
        if not 0.0 <= self.truth_forcing <= 1.0:
            raise LeadrrgError(
                f"model.grounding.truth_forcing is {self.truth_forcing!r}; expected a number in [0, 1]"
            )
        if not 0.0 <= self.truth_jitter <= 0.5:
            raise LeadrrgError(
                f"model.grounding.truth_jitter is {self.truth_jitter!r}; expected a number in [0, 0.5]"
            )
        if not 0.0 <= self.visual_dropout < 1.0:
            raise LeadrrgError(
                f"model.grounding.visual_dropout is {self.visual_dropout!r}; expected a number in [0, 1)"
            )
        if not 0.0 <= self.counterfactual < 1.0:
            raise LeadrrgError(
                f"model.grounding.counterfactual is {self.counterfactual!r}; expected a number in [0, 1)"
            )
        _check_range("model.grounding", "side_flip", self.side_flip, 0.0, 1.0, high_open=True)
        _check_range("model.grounding", "hedge_edit", self.hedge_edit, 0.0, 1.0, high_open=True)
        _check_choice("model.grounding", "balance", self.balance, BALANCES)
        _check_positive("model.grounding", "expert_warmup_steps", self.expert_warmup_steps, allow_zero=True)
        if not self.balance_clip >= 1.0:
            raise LeadrrgError(
                f"model.grounding.balance_clip is {self.balance_clip!r}; expected a number >= 1"
            )


@dataclass
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)  # the image encoder
    experts: ExpertConfig = field(default_factory=ExpertConfig)  # one pathology expert per observation
    injection: InjectionConfig = field(default_factory=InjectionConfig)  # how experts reach the decoder
    grounding: GroundingConfig = field(default_factory=GroundingConfig)  # how experts and decoder are trained
    decoder: DecoderConfig = field(default_factory=DecoderConfig)  # the language model
    max_views: int = 1  # views per study (IU X-Ray: 2); missing views are masked
    visual_pool: int = 1  # average-pool factor on the vision-token grid before the projector (1: keep all)
    cls_loss_weight: float = 4.0  # lambda in L = L_LM + lambda * L_cls
    label_policy: LabelPolicy = "ones"  # uncertain (-1) labels: ones (U-ones, default) | ignore

    def __post_init__(self) -> None:
        _check_positive("model", "max_views", self.max_views)
        _check_positive("model", "visual_pool", self.visual_pool)
        _check_positive("model", "cls_loss_weight", self.cls_loss_weight, allow_zero=True)
        _check_choice("model", "label_policy", self.label_policy, LABEL_POLICIES)
