"""Typed configs: one dataclass per component, composed into `RunConfig`.

Every field is typed, defaulted and commented; each dataclass validates itself on construction.
JSON io (`to_dict` / `from_dict`), named presets (`presets/*.json`) and typed dotted overrides
(`model.injection.fusion=none`) live here too. argparse lives only in the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from leadrrg.constants import OBSERVATIONS
from leadrrg.errors import LeadrrgError

C = TypeVar("C")


def _check_choice(owner: str, name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise LeadrrgError(f"{owner}.{name} is {value!r}; expected one of: {', '.join(map(str, choices))}")


def _check_positive(owner: str, name: str, value: float, allow_zero: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise LeadrrgError(
            f"{owner}.{name} is {value!r}; expected a finite {'non-negative' if allow_zero else 'positive'} number"
        )


def _check_range(
    owner: str, name: str, value: float, low: float, high: float, high_open: bool = False
) -> None:
    """low <= value <= high (or < high); NaN fails."""
    if not (low <= value <= high) or (high_open and value == high):
        raise LeadrrgError(
            f"{owner}.{name} is {value!r}; expected a number in [{low}, {high}{')' if high_open else ']'}"
        )


# --------------------------------------------------------------------------------------------------
# Model components


@dataclass
class VisionConfig:
    name: str = (
        "cnn_small"  # vision-encoder registry key: cnn_small, vit_small, hf (a local transformers model)
    )
    pretrained_path: str | None = None  # local directory of a transformers vision model (name "hf")
    image_size: int = 128  # square input side in pixels
    channels: int = 1  # input channels; grayscale radiographs are repeated to 3 for RGB encoders
    mean: float = 0.5  # per-channel normalisation applied after scaling pixels to [0, 1]
    std: float = 0.25
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


EXPERT_READOUTS = ("query", "query_max")


@dataclass
class ExpertConfig:
    names: list[str] = field(default_factory=lambda: list(OBSERVATIONS))  # one expert per observation
    hidden_size: int = 128  # De, width of an expert feature
    num_heads: int = 4  # heads of the experts' cross-attention over vision tokens
    mlp_ratio: float = 2.0  # per-expert MLP width as a multiple of De
    readout: str = "query_max"  # query: each expert reads only its attended vision feature (the paper) |
    # query_max: each expert also reads the vision tokens' max-pooled feature (the strongest local evidence)

    def __post_init__(self) -> None:
        if not self.names:
            raise LeadrrgError("model.experts.names is empty; expected at least one expert name")
        if self.readout not in EXPERT_READOUTS:
            raise LeadrrgError(
                f"model.experts.readout is {self.readout!r}; expected one of: {', '.join(EXPERT_READOUTS)}"
            )
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


FUSIONS = ("layerwise", "input", "aux", "none")
PROJECTIONS = ("per_layer", "shared")
GATES = ("dynamic", "static", "open")
CONFIDENCES = ("mixture", "explicit", "product", "none")


@dataclass
class InjectionConfig:
    fusion: str = "layerwise"  # layerwise (LEAD) | input (expert tokens as extra input tokens) |
    # aux (experts trained with the classification loss, nothing fused: the LVLM + classifier baseline) |
    # none (plain LVLM, no experts)
    projection: str = "per_layer"  # per_layer: a W^l per decoder layer | shared: one W for all layers
    gate: str = "dynamic"  # dynamic: per-token gate | static: one learned scalar per layer | open: g = 1
    confidence: str = "explicit"  # explicit: p*(e+u) + (1-p)*a (default) | mixture: p*e + (1-p)*a (the
    # paper's) | product: p*e | none: e
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


ATTN_IMPLEMENTATIONS = ("auto", "eager", "sdpa", "flash_attention_2")


@dataclass
class DecoderConfig:
    backbone: str = "llama"  # backbone registry key: llama, qwen2, mistral, gpt2
    pretrained_path: str | None = None  # local directory of a pretrained causal LM; None trains from scratch
    hidden_size: int = 128  # D (from scratch)
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    intermediate_size: int = 352
    max_positions: int = 512  # visual tokens + prompt + report
    vocab_size: int = 2000  # target size of the from-scratch BPE tokenizer
    dropout: float = 0.0
    lora_r: int = 16  # LoRA rank on attention and MLP projections (pretrained only); 0 trains the LLM fully
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    gradient_checkpointing: bool = False
    load_dtype: str = (
        "float32"  # dtype of pretrained weights: float32 | bfloat16 | float16 (autocast does the rest)
    )
    attn_implementation: str = (
        "auto"  # auto (transformers' choice) | eager | sdpa | flash_attention_2 (needs CUDA)
    )

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
        _check_choice("model.decoder", "load_dtype", self.load_dtype, ("float32", "bfloat16", "float16"))
        _check_choice("model.decoder", "attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise LeadrrgError(
                f"model.decoder.hidden_size ({self.hidden_size}) must be divisible by model.decoder.num_heads ({self.num_heads}), "
                f"and num_heads by model.decoder.num_kv_heads ({self.num_kv_heads})"
            )


BALANCES = ("none", "context")


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
    detach_experts: bool = (
        True  # stop the LM loss at the expert features and probabilities: only L_cls trains
    )
    # the experts (two-stage classifiers as in RaDialog / CCD, in one pass)
    expert_warmup_steps: int = 600  # stage 1: steps of the vision encoder + experts alone on L_cls before
    # joint training (train/expert_warmup.py); 0: joint training only (the paper)
    expert_warmup_augment: bool = True  # stage 1 augments its images when data.augment does; false: stage 1
    # reads them as stored (sharper small signs for the experts) and only the joint stage augments
    detach_vision: bool = False  # stop the LM loss at the vision tokens too: only L_cls trains the vision
    # encoder (the decoder's visual prompt still goes through its trainable projector); needs experts
    balance: str = "none"  # expert BCE weights: none | context (each expert's label made independent of the
    # other labels of the training data by inverse propensity weights: exclusive samples count more)
    balance_clip: float = 10.0  # context weights are clipped to [1 / clip, clip]
    visual_dropout: float = (
        0.0  # share of training studies whose visual prompt tokens are masked out, so that
    )
    # the decoder must write their findings from the experts (modality dropout: the gated path is the way in)
    counterfactual: float = 0.8  # share of training studies whose decoder reads the truth with one finding
    # flipped, against a report edited to match (data/counterfactual.py): p disagrees with the image, and the
    # target follows p. 0: off

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
        _check_choice("model.grounding", "balance", self.balance, BALANCES)
        _check_positive("model.grounding", "expert_warmup_steps", self.expert_warmup_steps, allow_zero=True)
        if not self.balance_clip >= 1.0:
            raise LeadrrgError(
                f"model.grounding.balance_clip is {self.balance_clip!r}; expected a number >= 1"
            )


LABEL_POLICIES = ("ones", "ignore")


@dataclass
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    experts: ExpertConfig = field(default_factory=ExpertConfig)
    injection: InjectionConfig = field(default_factory=InjectionConfig)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    max_views: int = 1  # views per study (IU X-Ray: 2); missing views are masked
    visual_pool: int = 1  # average-pool factor on the vision-token grid before the projector (1: keep all)
    cls_loss_weight: float = 4.0  # lambda in L = L_LM + lambda * L_cls
    label_policy: str = "ones"  # uncertain (-1) labels: ones (U-ones, default) | ignore

    def __post_init__(self) -> None:
        _check_positive("model", "max_views", self.max_views)
        _check_positive("model", "visual_pool", self.visual_pool)
        _check_positive("model", "cls_loss_weight", self.cls_loss_weight, allow_zero=True)
        _check_choice("model", "label_policy", self.label_policy, LABEL_POLICIES)


# --------------------------------------------------------------------------------------------------
# Data, training, decoding

DATA_FORMATS = ("synth", "jsonl", "iu_xray", "mimic_cxr", "chexpert_plus")
SECTIONS = ("findings", "impression", "both")


LABEL_JOINS = ("auto", "key", "report", "row")
LABEL_CODES = ("chexpert", "chexbert")
GROUPINGS = ("entry", "study")


@dataclass
class DataConfig:
    format: str = "synth"  # synth | jsonl | iu_xray | mimic_cxr | chexpert_plus
    root: str = ""  # data root directory (set by --data)
    section: str = "findings"  # report section used as the target: findings | impression | both
    clean: str = "r2gen"  # report text cleaning: r2gen | none
    max_report_tokens: int = 96  # report tokens kept (after the prompt), EOS included
    # CheXpert-format labels (CSV, CSV.GZ or JSON lines), relative to root or absolute; joined by MIMIC
    # study_id / CheXpert Plus path_to_image / id (defaults: see data/manifests.py)
    label_file: str | None = None
    # how label_file rows meet studies: auto (the id column if the file has one, else the report text of a
    # labeler's output, `Reports` / `Report Impression`) | key | report | row (data-file order)
    label_join: str = "auto"
    # label values: chexpert (1 pos, 0 neg, -1 uncertain, blank not mentioned) | chexbert (PromptMRG /
    # CheXbert class ids: 0 not mentioned, 1 pos, 2 neg, 3 uncertain; lists in CheXbert's head order)
    label_codes: str = "chexpert"
    # mimic_cxr: entry (one study per annotation entry = per image, as R2Gen evaluates) | study (entries
    # grouped by study_id, their images as the views); the other layouts are per study already
    grouping: str = "entry"
    # iu_xray / mimic_cxr: the annotation JSON, relative to root (default annotation.json, else the one
    # *annotation*.json in root, e.g. PromptMRG's iu_annotation_promptmrg.json)
    annotation_file: str | None = None
    skip_bad_images: bool = False  # skip unreadable images with a count instead of failing
    allow_outside_root: bool = False  # accept image paths that resolve (symlinks followed) outside `root`
    num_workers: int = 0  # DataLoader worker processes
    # training images get a small random affine and brightness / contrast jitter (data/dataset.py). The demo
    # preset turns it off: SynthCXR draws pose, exposure and noise per image already, and the resampling blurs
    # the thin and small signs (docs/RESULTS.md)
    augment: bool = True

    def __post_init__(self) -> None:
        _check_choice("data", "format", self.format, DATA_FORMATS)
        _check_choice("data", "section", self.section, SECTIONS)
        _check_choice("data", "clean", self.clean, ("r2gen", "none"))
        _check_choice("data", "label_join", self.label_join, LABEL_JOINS)
        _check_choice("data", "label_codes", self.label_codes, LABEL_CODES)
        _check_choice("data", "grouping", self.grouping, GROUPINGS)
        _check_positive("data", "max_report_tokens", self.max_report_tokens)
        _check_positive("data", "num_workers", self.num_workers, allow_zero=True)


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Validation metrics that can select RUN/best/ (train.select_metric); the val_gen_* ones score reports generated
# on the first train.eval_generate validation studies.
SELECT_METRICS = (
    "val_loss",
    "val_lm_loss",
    "val_expert_macro_auroc",
    "val_expert_macro_f1",
    "val_gen_ce14_micro_f1",
    "val_gen_bleu_4",
    "val_gen_hallucination_rate",
)
GENERATION_METRICS = tuple(name for name in SELECT_METRICS if name.startswith("val_gen_"))
LOWER_IS_BETTER = ("val_loss", "val_lm_loss", "val_gen_hallucination_rate")


@dataclass
class TrainConfig:
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 16  # studies per step per process (before accumulation)
    grad_accum_steps: int = 1
    lr: float = 1e-3  # new modules (vision, projector, experts, injection) and from-scratch decoders
    lr_llm: float = 2e-4  # pretrained LLM parameters (LoRA adapters) and a pretrained vision encoder
    weight_decay: float = 0.01  # AdamW decoupled decay; none on norms, biases and embeddings
    warmup_steps: int = 50  # linear warmup from lr / warmup_steps to lr
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at max_steps
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    precision: str = "auto"  # auto: bf16 autocast on CUDA (fp16 + GradScaler without bf16), fp32 on CPU | fp32 | bf16 | fp16
    compile: bool = (
        False  # torch.compile the model for training (the weights saved are the uncompiled module's)
    )
    eval_every: int = 200  # validation every N steps (0: only at the end)
    eval_batches: int = 8  # validation batches per evaluation (0: the whole val split)
    eval_generate: int = 0  # generate reports for the first N validation studies at each evaluation and score
    # them (val_gen_ce14_micro_f1, val_gen_bleu_4, val_gen_hallucination_rate; decode settings: decode.*); 0: off
    eval_samples: int = 3  # generated reports shown as text in TensorBoard per evaluation
    select_metric: str = (
        ""  # keep the best checkpoint by this validation metric in RUN/best/ ("" : no RUN/best/)
    )
    select_mode: str = "auto"  # auto (min for losses and hallucination rate, else max) | min | max
    early_stop_patience: int = 0  # stop after N evaluations without a better select_metric; 0: never
    save_every: int = 200  # checkpoint every N steps (0: only at the end)
    log_every: int = 10  # a logs.jsonl / TensorBoard record every N steps
    seed: int = 0  # model init, data order (per epoch) and augmentation (per position) follow it
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun, auto picks cuda:LOCAL_RANK)

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum_steps", "log_every"):
            _check_positive("train", name, getattr(self, name))
        for name in ("warmup_steps", "eval_every", "eval_batches", "save_every", "weight_decay", "grad_clip"):
            _check_positive("train", name, getattr(self, name), allow_zero=True)
        _check_positive("train", "lr", self.lr)
        _check_positive("train", "lr_llm", self.lr_llm)
        if not 0 <= self.min_lr_ratio <= 1:
            raise LeadrrgError(f"train.min_lr_ratio is {self.min_lr_ratio!r}; expected a number in [0, 1]")
        _check_choice("train", "precision", self.precision, PRECISIONS)
        for name in ("eval_generate", "eval_samples", "early_stop_patience"):
            _check_positive("train", name, getattr(self, name), allow_zero=True)
        if self.select_metric:
            _check_choice("train", "select_metric", self.select_metric, SELECT_METRICS)
        _check_choice("train", "select_mode", self.select_mode, ("auto", "min", "max"))
        if self.select_metric in GENERATION_METRICS and not self.eval_generate:
            raise LeadrrgError(
                f"train.select_metric is {self.select_metric!r}, a score of generated reports, but train.eval_generate "
                "is 0; set train.eval_generate=N (validation studies to generate for)"
            )
        if self.early_stop_patience and not self.select_metric:
            raise LeadrrgError(
                "train.early_stop_patience is set but train.select_metric is empty; expected the metric to watch, "
                "e.g. train.select_metric=val_loss"
            )
        if not (self.device in ("auto", "cpu", "cuda") or self.device.removeprefix("cuda:").isdigit()):
            raise LeadrrgError(f"train.device is {self.device!r}; expected auto, cpu, cuda or cuda:N")


STRATEGIES = ("greedy", "beam", "sample")


@dataclass
class DecodeConfig:
    strategy: str = "greedy"  # greedy | beam | sample
    num_beams: int = 3
    max_new_tokens: int = 96
    min_new_tokens: int = 0  # EOS is banned until this many tokens are generated (benchmarks force a length)
    temperature: float = 1.0
    top_k: int = 0  # 0 disables
    top_p: float = 1.0
    repetition_penalty: float = 1.0  # >1 penalises tokens already generated (CTRL-style)
    no_repeat_ngram_size: int = 0  # 0 disables
    length_penalty: float = 1.0  # beam search score = logprob / length ** length_penalty
    batch_size: int = 16
    expert_bias: float = (
        0.0  # CCD-style expert logit bias on finding-word tokens (leadrrg.inference.expert_bias):
    )
    # strength multiplying log(p / (1 - p)) of each expert; 0 disables
    expert_bias_gamma: float = 10.0  # the per-token bias is clipped to [-log gamma, log gamma] (> 1)
    expert_threshold: float = 0.7  # > 0: the decoder reads each expert's p > threshold as 1, else 0 (the 0/1
    # evidence truth forcing trains it on); reports still carry the soft p. 0: the decoder reads p itself (a
    # decoder trained on its own p, truth_forcing=0 as in lead_paper, should)
    derive_no_finding: bool = True  # with expert_threshold > 0 the decoder reads No Finding as CheXpert
    # defines it (1 iff it reads no other finding but Support Devices), as in every label it was trained on,
    # instead of the No Finding expert's own verdict; an override (flip, API) of one finding then cannot
    # leave the decoder reading "normal study" beside it. false: the No Finding expert's thresholded p
    cache: str = (
        "dynamic"  # KV cache of greedy / sampled decoding: dynamic | static (preallocated; for compile)
    )
    compile: bool = (
        False  # torch.compile the one-token decoding step (with cache=static; CUDA graphs on GPUs)
    )
    dtype: str = "float32"  # the language model's weights and compute when a run is loaded for decoding:
    # float32 (as trained) | bfloat16 | float16. Half the bytes to read per token: batch-1 decoding is bound by
    # reading the weights. The vision encoder and the experts stay float32; greedy tokens may differ from float32

    def __post_init__(self) -> None:
        _check_choice("decode", "strategy", self.strategy, STRATEGIES)
        _check_choice("decode", "cache", self.cache, ("dynamic", "static"))
        _check_choice("decode", "dtype", self.dtype, ("float32", "bfloat16", "float16"))
        _check_positive("decode", "num_beams", self.num_beams)
        _check_positive("decode", "max_new_tokens", self.max_new_tokens)
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise LeadrrgError(
                f"decode.min_new_tokens is {self.min_new_tokens!r}; "
                f"expected 0 to decode.max_new_tokens ({self.max_new_tokens})"
            )
        _check_positive("decode", "top_k", self.top_k, allow_zero=True)
        _check_positive("decode", "no_repeat_ngram_size", self.no_repeat_ngram_size, allow_zero=True)
        _check_positive("decode", "temperature", self.temperature)
        if not 0 < self.top_p <= 1:
            raise LeadrrgError(f"decode.top_p is {self.top_p!r}; expected a number in (0, 1]")
        _check_positive("decode", "repetition_penalty", self.repetition_penalty)
        _check_positive("decode", "batch_size", self.batch_size)
        _check_range("decode", "length_penalty", self.length_penalty, -1e3, 1e3)
        if not 0 <= self.expert_bias < float("inf"):  # NaN fails too
            raise LeadrrgError(
                f"decode.expert_bias is {self.expert_bias!r}; expected a finite non-negative number (0 disables)"
            )
        if not 0 <= self.expert_threshold < 1:
            raise LeadrrgError(
                f"decode.expert_threshold is {self.expert_threshold!r}; expected a number in [0, 1) (0 disables)"
            )
        if not 1 < self.expert_bias_gamma < float("inf"):
            raise LeadrrgError(
                f"decode.expert_bias_gamma is {self.expert_bias_gamma!r}; expected a finite number > 1"
            )


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    preset: str = ""  # the preset this config started from (informational)


# --------------------------------------------------------------------------------------------------
# JSON io and overrides


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Convert a JSON value to the annotated type `tp`, or fail naming the key."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise LeadrrgError(f"config key {where!r} must be an object, got {value!r}")
        return from_dict(tp, value, prefix=where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(value, non_none[0], where)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise LeadrrgError(f"config key {where!r} must be a list, got {value!r}")
        return [_convert(v, item, where) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise LeadrrgError(f"config key {where!r} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise LeadrrgError(f"config key {where!r} must be an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise LeadrrgError(f"config key {where!r} must be an integer, got {value!r}") from None
    if tp is float:
        try:
            if isinstance(value, bool):
                raise TypeError
            number = float(value)
        except (TypeError, ValueError):
            raise LeadrrgError(f"config key {where!r} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise LeadrrgError(f"config key {where!r} must be a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise LeadrrgError(f"config key {where!r} must be a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build dataclass `cls` from a (possibly partial) dict; unknown keys fail with the valid ones."""
    if not isinstance(data, dict):
        where = f"config key {prefix!r}" if prefix else "a config"
        raise LeadrrgError(f"{where} must be a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in hints or key not in names:
            raise LeadrrgError(f"unknown config key {where!r}; expected one of: {', '.join(names)}")
        kwargs[key] = _convert(value, hints[key], where)
    return cls(**kwargs)


def first_difference(
    a: Any, b: Any, prefix: str = "", now: str = "now", saved: str = "in the run"
) -> str | None:
    """The first dotted key at which `a` (now) and `b` (saved) differ, as "key (b in the run, a now)"; None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key, now, saved)
            if found:
                return found
        return None
    return None if a == b else f"{prefix} ({b!r} {saved}, {a!r} {now})"


def merge_dicts(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], str]:
    if "=" not in text:
        raise LeadrrgError(
            f"override {text!r} is not of the form key.path=value (e.g. model.injection.fusion=none)"
        )
    key, value = text.split("=", 1)
    return key.strip().split("."), value.strip()


def apply_overrides(config: C, overrides: list[str]) -> C:
    """Apply typed dotted overrides (`train.max_steps=200`) and re-validate the whole config."""
    data = to_dict(config)
    for text in overrides:
        path, raw = parse_override(text)
        # Parse JSON-looking values (numbers, true/false, null, lists); keep anything else as a string.
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node: dict[str, Any] = data
        for i, part in enumerate(path[:-1]):
            if not isinstance(node.get(part), dict):
                raise LeadrrgError(f"unknown config key {'.'.join(path[: i + 1])!r} in override {text!r}")
            node = node[part]
        if path[-1] not in node:
            raise LeadrrgError(
                f"unknown config key {'.'.join(path)!r} in override {text!r}; expected one of: {', '.join(node)}"
            )
        node[path[-1]] = (
            str(value) if isinstance(node[path[-1]], str) and not isinstance(value, str) else value
        )
    return from_dict(type(config), data)


def preset_names() -> list[str]:
    files = resources.files("leadrrg").joinpath("presets")
    return sorted(p.name[: -len(".json")] for p in files.iterdir() if p.name.endswith(".json"))


def load_preset(name: str) -> RunConfig:
    """A named preset shipped in `leadrrg/presets/NAME.json` (partial; defaults fill the rest)."""
    if name not in preset_names():
        raise LeadrrgError(f"unknown preset {name!r}; expected one of: {', '.join(preset_names())}")
    text = resources.files("leadrrg").joinpath("presets", f"{name}.json").read_text()
    data = json.loads(text)
    data.setdefault("preset", name)
    return from_dict(RunConfig, data)


def save_config(config: Any, path: str | Path) -> None:
    from leadrrg.io import atomic_write_text

    atomic_write_text(path, json.dumps(to_dict(config), indent=2) + "\n")


# Settings whose default changed after runs were saved without them: a run's config.json that lacks one was
# trained with the old behaviour, so it keeps it (the new default applies to new runs only).
RUN_DEFAULTS_BEFORE_CHANGE: dict[tuple[str, ...], Any] = {
    ("model", "experts", "readout"): "query",
    ("model", "grounding", "expert_warmup_steps"): 0,
    ("model", "grounding", "balance"): "context",
    ("model", "grounding", "counterfactual"): 0.0,
    ("decode", "expert_threshold"): 0.0,
    ("decode", "derive_no_finding"): False,
}


def _read_config_dict(path: Path) -> dict[str, Any]:
    """The JSON object of a config file, or a LeadrrgError naming it."""
    from leadrrg.io import read_text

    text = read_text(path, "config file", "a leadrrg config (JSON)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LeadrrgError(f"config file {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise LeadrrgError(
            f"config file {path} holds a JSON {type(data).__name__}; expected an object (a RunConfig)"
        )
    return data


def _config_from_file(path: Path, cls: type[C], data: dict[str, Any]) -> C:
    try:
        return from_dict(cls, data)
    except LeadrrgError as exc:
        raise LeadrrgError(f"config file {path}: {exc}") from None


def load_config(path: str | Path, cls: type[C] = RunConfig) -> C:  # type: ignore[assignment]
    path = Path(path)
    return _config_from_file(path, cls, _read_config_dict(path))


def load_run_config(path: str | Path) -> RunConfig:
    """A trained run's config.json, with settings it predates filled by the behaviour it was trained with."""
    path = Path(path)
    data = _read_config_dict(path)
    for key, old in RUN_DEFAULTS_BEFORE_CHANGE.items():
        node = data
        for part in key[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.setdefault(key[-1], old)
    return _config_from_file(path, RunConfig, data)
