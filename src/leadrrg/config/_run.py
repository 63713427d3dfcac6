"""Run configs: data, training and decoding, composed with the model into `RunConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from leadrrg.config._checks import _check_choice, _check_positive, _check_range
from leadrrg.config._model import DTYPES, Dtype, ModelConfig
from leadrrg.constants import OBSERVATIONS
from leadrrg.errors import LeadrrgError

# Each choice is written once, as a Literal; its tuple (for checks, messages and CLI choices) is derived from it.
DataFormat = Literal["synth", "jsonl", "iu_xray", "mimic_cxr", "chexpert_plus"]
Section = Literal["findings", "impression", "both"]
CleanMode = Literal["r2gen", "none"]
LabelJoin = Literal["auto", "key", "report", "row"]
LabelCodes = Literal["chexpert", "chexbert"]
Grouping = Literal["entry", "study"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Tracker = Literal["tensorboard", "wandb", "mlflow", "none"]
TrainStrategy = Literal["ddp", "fsdp"]  # train.strategy: how the processes of a torchrun share the model
# Validation metrics that can select RUN/best/ (train.select_metric); the val_gen_* ones score reports generated
# on the first train.eval_generate validation studies.
SelectMetric = Literal[
    "val_loss",
    "val_lm_loss",
    "val_expert_macro_auroc",
    "val_expert_macro_f1",
    "val_gen_ce14_micro_f1",
    "val_gen_bleu_4",
    "val_gen_hallucination_rate",
]
SelectMode = Literal["auto", "min", "max"]
Strategy = Literal["greedy", "beam", "sample"]
Cache = Literal["dynamic", "static"]
Quantize = Literal["none", "int8"]
ThresholdSource = Literal["calibrated", "global"]

DATA_FORMATS: tuple[DataFormat, ...] = get_args(DataFormat)
SECTIONS: tuple[Section, ...] = get_args(Section)
CLEAN_MODES: tuple[CleanMode, ...] = get_args(CleanMode)
LABEL_JOINS: tuple[LabelJoin, ...] = get_args(LabelJoin)
LABEL_CODES: tuple[LabelCodes, ...] = get_args(LabelCodes)
GROUPINGS: tuple[Grouping, ...] = get_args(Grouping)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
SELECT_METRICS: tuple[SelectMetric, ...] = get_args(SelectMetric)
GENERATION_METRICS = tuple(name for name in SELECT_METRICS if name.startswith("val_gen_"))
LOWER_IS_BETTER = ("val_loss", "val_lm_loss", "val_gen_hallucination_rate")
SELECT_MODES: tuple[SelectMode, ...] = get_args(SelectMode)
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
CACHES: tuple[Cache, ...] = get_args(Cache)
QUANTIZE_MODES: tuple[Quantize, ...] = get_args(Quantize)
THRESHOLD_SOURCES: tuple[ThresholdSource, ...] = get_args(ThresholdSource)


@dataclass
class DataConfig:
    format: DataFormat = "synth"  # synth | jsonl | iu_xray | mimic_cxr | chexpert_plus
    root: str = ""  # data root directory (set by --data)
    section: Section = "findings"  # report section used as the target: findings | impression | both
    clean: CleanMode = "r2gen"  # report text cleaning: r2gen | none (data/text.py)
    max_report_tokens: int = 96  # report tokens kept (after the prompt), EOS included
    # CheXpert-format labels (CSV, CSV.GZ or JSON lines), relative to root or absolute; joined by MIMIC
    # study_id / CheXpert Plus path_to_image / id (defaults: see data/manifests.py)
    label_file: str | None = None
    # how label_file rows meet studies: auto (the id column if the file has one, else the report text of a
    # labeler's output, `Reports` / `Report Impression`) | key | report | row (data-file order)
    label_join: LabelJoin = "auto"
    # label values: chexpert (1 pos, 0 neg, -1 uncertain, blank not mentioned) | chexbert (PromptMRG /
    # CheXbert class ids: 0 not mentioned, 1 pos, 2 neg, 3 uncertain; lists in CheXbert's head order)
    label_codes: LabelCodes = "chexpert"
    # mimic_cxr: entry (one study per annotation entry = per image, as R2Gen evaluates) | study (entries
    # grouped by study_id, their images as the views); the other layouts are per study already
    grouping: Grouping = "entry"
    # iu_xray / mimic_cxr: the annotation JSON, relative to root (default annotation.json, else the one
    # *annotation*.json in root, e.g. PromptMRG's iu_annotation_promptmrg.json)
    annotation_file: str | None = None
    # the split of every study from a file (relative to root or absolute), applied to any format: MIMIC-CXR-JPG's
    # mimic-cxr-2.0.0-split.csv.gz, a CSV with an id column and `split`, or JSON ({split: [ids or entries]},
    # {id: split}); studies it does not name are left out (data/splits.py)
    split_file: str | None = None
    # the label_file column that holds the study key (default: study_id for mimic_cxr, path_to_image for
    # chexpert_plus, id otherwise), e.g. `study_id` on a jsonl root, `Path` for CheXpert v1's train.csv
    label_key: str | None = None
    skip_bad_images: bool = False  # skip unreadable images with a count instead of failing
    allow_outside_root: bool = False  # accept image paths that resolve (symlinks followed) outside `root`
    num_workers: int = 0  # DataLoader worker processes
    # training images get a small random affine and brightness / contrast jitter (data/dataset.py). The demo
    # preset turns it off: SynthCXR draws pose, exposure and noise per image already, and the resampling blurs
    # the thin and small signs (docs/RESULTS.md)
    augment: bool = True
    # training batches of studies whose tokenised reports have similar lengths, so less padding (Hugging Face
    # Trainer's group_by_length; the same studies each epoch, grouped: train/sampler.py)
    group_by_length: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.group_by_length, bool):
            raise LeadrrgError(f"data.group_by_length is {self.group_by_length!r}; expected true or false")
        _check_choice("data", "format", self.format, DATA_FORMATS)
        _check_choice("data", "section", self.section, SECTIONS)
        _check_choice("data", "clean", self.clean, CLEAN_MODES)
        _check_choice("data", "label_join", self.label_join, LABEL_JOINS)
        _check_choice("data", "label_codes", self.label_codes, LABEL_CODES)
        _check_choice("data", "grouping", self.grouping, GROUPINGS)
        _check_positive("data", "max_report_tokens", self.max_report_tokens)
        _check_positive("data", "num_workers", self.num_workers, allow_zero=True)
        for name in ("split_file", "label_key"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise LeadrrgError(f"data.{name} is {value!r}; expected a non-empty name (or leave it unset)")


@dataclass
class TrainConfig:
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 16  # studies per step per process (before accumulation)
    grad_accum_steps: int = 1  # micro-batches accumulated per optimizer step
    lr: float = 1e-3  # new modules (vision, projector, experts, injection) and from-scratch decoders
    lr_llm: float = 2e-4  # pretrained LLM parameters (LoRA adapters) and a pretrained vision encoder
    weight_decay: float = 0.01  # AdamW decoupled decay; none on norms, biases and embeddings
    warmup_steps: int = 50  # linear warmup from lr / warmup_steps to lr
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at max_steps
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    precision: Precision = "auto"  # auto: bf16 autocast on CUDA (fp16 + GradScaler without bf16), fp32 on
    # CPU | fp32 | bf16 | fp16
    compile: bool = False  # torch.compile the model for training (the weights saved are the
    # uncompiled module's)
    eval_every: int = 200  # validation every N steps (0: only at the end)
    eval_batches: int = 8  # validation batches per evaluation (0: the whole val split)
    eval_generate: int = 0  # generate reports for the first N validation studies at each evaluation and score
    # them (val_gen_ce14_micro_f1, val_gen_bleu_4, val_gen_hallucination_rate; decode settings: decode.*); 0: off
    eval_samples: int = 3  # generated reports shown as text in TensorBoard per evaluation
    # keep the best checkpoint by this validation metric in RUN/best/ ("": no RUN/best/)
    select_metric: SelectMetric | Literal[""] = ""
    select_mode: SelectMode = "auto"  # auto (min for losses and hallucination rate, else max) | min | max
    early_stop_patience: int = 0  # stop after N evaluations without a better select_metric; 0: never
    save_every: int = 200  # checkpoint every N steps (0: only at the end)
    log_every: int = 10  # a logs.jsonl / TensorBoard record every N steps
    seed: int = 0  # model init, data order (per epoch) and augmentation (per position) follow it
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun, auto picks cuda:LOCAL_RANK)
    # where train and val records go beside logs.jsonl: tensorboard (RUN/tb) | wandb | mlflow (optional extras
    # `leadrrg[wandb]` / `leadrrg[mlflow]`, offline by default) | none
    tracker: Tracker = "tensorboard"
    # under torchrun: ddp (every process holds the whole model) | fsdp (FSDP2: parameters, gradients and optimizer
    # state sharded across the processes, for decoders that do not fit one device; docs/TRAINING.md)
    strategy: TrainStrategy = "ddp"

    def __post_init__(self) -> None:
        _check_choice("train", "tracker", self.tracker, get_args(Tracker))
        _check_choice("train", "strategy", self.strategy, get_args(TrainStrategy))
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
        _check_choice("train", "select_mode", self.select_mode, SELECT_MODES)
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


@dataclass
class DecodeConfig:
    strategy: Strategy = "greedy"  # greedy | beam | sample
    num_beams: int = 3  # beams kept by beam search (strategy beam)
    max_new_tokens: int = 96  # report tokens generated at most
    min_new_tokens: int = 0  # EOS is banned until this many tokens are generated (benchmarks force a length)
    temperature: float = 1.0  # logits are divided by it before sampling (strategy sample)
    top_k: int = 0  # sample among the k most likely tokens; 0 disables
    top_p: float = 1.0  # sample among the top tokens holding probability p (nucleus); 1 disables
    repetition_penalty: float = 1.0  # >1 penalises tokens already generated (CTRL-style)
    no_repeat_ngram_size: int = 0  # no n-gram of this size is generated twice; 0 disables
    length_penalty: float = 1.0  # beam search score = logprob / length ** length_penalty
    batch_size: int = 16  # studies decoded together
    expert_bias: float = 0.0  # CCD-style expert logit bias on finding-word tokens (inference/expert_bias.py):
    # strength multiplying log(p / (1 - p)) of each expert; 0 disables
    expert_bias_gamma: float = 10.0  # the per-token bias is clipped to [-log gamma, log gamma] (> 1)
    expert_threshold: float = 0.7  # > 0: the decoder reads each expert's p > threshold as 1, else 0 (the 0/1
    # evidence truth forcing trains it on); reports still carry the soft p. 0: the decoder reads p itself (a
    # decoder trained on its own p, truth_forcing=0 as in lead_paper, should). Also the fallback of `thresholds`:
    thresholds: ThresholdSource = "global"  # each expert's threshold: global (expert_threshold for every
    # finding; the default: on the selection set the calibrated thresholds raised hallucination, docs/
    # FAITHFULNESS.md) | calibrated (its entry in expert_thresholds, which `leadrrg.load` fills from the run's
    # thresholds.json, written by `leadrrg calibrate` and at the end of training; expert_threshold for a finding
    # without one or a run without the file). With expert_threshold 0 the decoder reads soft p either way; the
    # thresholds then only mark which experts the report contradicts
    expert_thresholds: dict[str, float] = field(default_factory=dict)  # observation -> threshold in (0, 1)
    hedge_band: float = 0.0  # the uncertainty band: with expert_threshold > 0 and a decoder trained with
    # model.grounding.hedge, a finding whose p is above its threshold - hedge_band but not above its threshold is
    # read as 1/2 (uncertain), so the report hedges it instead of leaving it out; 0: no band (silent below threshold)
    derive_no_finding: bool = True  # with expert_threshold > 0 the decoder reads No Finding as CheXpert
    # defines it (1 iff it reads no other finding but Support Devices), as in every label it was trained on,
    # instead of the No Finding expert's own verdict; an override (flip, API) of one finding then cannot
    # leave the decoder reading "normal study" beside it. false: the No Finding expert's thresholded p
    rerank: int = 8  # evidence-consistent decoding (inference/rerank.py): a report that contradicts its
    # experts (an expert above its threshold not stated, one below it stated, another side) is decoded again, up
    # to this many sampled candidates, and the one with the fewest contradictions is kept; 0 disables. 8 (was 4)
    # and the temperature were chosen on two selection priors' val splits (docs/FAITHFULNESS.md)
    rerank_temperature: float = 0.8  # the candidates' sampling temperature
    rerank_top_p: float = (
        0.95  # the candidates' nucleus: tail tokens are never drawn (without it about 1 report
    )
    # in 100 came out with a doubled word, "no no pleural effusion"; docs/FAITHFULNESS.md)
    cache: Cache = "dynamic"  # KV cache of greedy / sampled decoding: dynamic | static (preallocated;
    # for compile)
    compile: bool = False  # torch.compile the one-token decoding step (with cache=static; CUDA graphs
    # on GPUs)
    dtype: Dtype = "float32"  # the language model's weights and compute when a run is loaded for decoding:
    # float32 (as trained) | bfloat16 | float16. Half the bytes to read per token: batch-1 decoding is bound by
    # reading the weights. The vision encoder and the experts stay float32; greedy tokens may differ from float32
    quantize: Quantize = "none"  # none | int8: the language model's linear layers (not the head, embeddings,
    # gates, experts, projections or vision encoder) stored as int8 with per-channel scales when a run is loaded
    # for decoding (inference/quantize.py; CPU only, with dtype float32): a quarter of the float32 bytes per token

    def __post_init__(self) -> None:
        _check_choice("decode", "strategy", self.strategy, STRATEGIES)
        _check_choice("decode", "cache", self.cache, CACHES)
        _check_choice("decode", "dtype", self.dtype, DTYPES)
        _check_choice("decode", "quantize", self.quantize, QUANTIZE_MODES)
        if self.quantize != "none" and self.dtype != "float32":
            raise LeadrrgError(
                f"decode.quantize={self.quantize} with decode.dtype={self.dtype}: int8 weights compute in "
                "float32; expected decode.dtype=float32 (or decode.quantize=none)"
            )
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
        _check_range("decode", "hedge_band", self.hedge_band, 0.0, 1.0, high_open=True)
        if isinstance(self.rerank, bool) or not isinstance(self.rerank, int) or self.rerank < 0:
            raise LeadrrgError(
                f"decode.rerank is {self.rerank!r}; expected a whole number of candidates >= 0 (0 disables)"
            )
        _check_positive("decode", "rerank_temperature", self.rerank_temperature)
        if not 0 < self.rerank_top_p <= 1:
            raise LeadrrgError(f"decode.rerank_top_p is {self.rerank_top_p!r}; expected a number in (0, 1]")
        self._check_expert_thresholds()
        if not 1 < self.expert_bias_gamma < float("inf"):
            raise LeadrrgError(
                f"decode.expert_bias_gamma is {self.expert_bias_gamma!r}; expected a finite number > 1"
            )

    def _check_expert_thresholds(self) -> None:
        _check_choice("decode", "thresholds", self.thresholds, THRESHOLD_SOURCES)
        if not isinstance(self.expert_thresholds, dict):
            raise LeadrrgError(
                f"decode.expert_thresholds is {self.expert_thresholds!r}; expected an object "
                '{observation: threshold}, e.g. {"Edema": 0.45}'
            )
        for name, value in self.expert_thresholds.items():
            if name not in OBSERVATIONS:
                raise LeadrrgError(
                    f"decode.expert_thresholds names {name!r}; expected CheXpert observations: {', '.join(OBSERVATIONS)}"
                )
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise LeadrrgError(
                    f"decode.expert_thresholds[{name!r}] is {value!r}; expected a number in (0, 1)"
                )
        self.expert_thresholds = {name: float(v) for name, v in self.expert_thresholds.items()}

    def threshold_for(self, name: str) -> float:
        """The threshold of expert `name` (0: the decoder reads its soft p): its calibrated one with
        thresholds=calibrated, else decode.expert_threshold."""
        if self.thresholds == "calibrated":
            return self.expert_thresholds.get(name, self.expert_threshold)
        return self.expert_threshold

    def hedge_floor(self, name: str) -> float:
        """The lower edge of expert `name`'s uncertainty band: p above it (and not above its threshold) is hedged.
        Equal to the threshold when there is no band, and for No Finding, which is not a finding one hedges."""
        threshold = self.threshold_for(name)
        return threshold if name == "No Finding" else max(0.0, round(threshold - self.hedge_band, 6))


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)  # the network (model.*)
    data: DataConfig = field(default_factory=DataConfig)  # what is read and how (data.*)
    train: TrainConfig = field(default_factory=TrainConfig)  # the optimisation (train.*)
    decode: DecodeConfig = field(default_factory=DecodeConfig)  # report generation (decode.*)
    preset: str = ""  # the preset this config started from (informational)
