"""Everything a training run needs, built from a RunConfig: studies, tokenizer, model, data loaders.

The data order is a pure function of (train.seed, epoch) (`EpochShardSampler`), and each item's
augmentation a pure function of (train.seed, epoch, position) (`PositionSeeded`): a resumed run reads
exactly the batches an uninterrupted run would, with any number of loader workers or processes, and the
global torch RNG (dropout) is left to the checkpointed state.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn
from torch.utils.data import DataLoader, Dataset

from leadrrg import __version__
from leadrrg.collectives import DistContext, broadcast_object
from leadrrg.config import RunConfig
from leadrrg.constants import OBSERVATIONS
from leadrrg.data.collate import ReportCollator
from leadrrg.data.counterfactual import CounterfactualEditor
from leadrrg.data.dataset import StudyDataset, raise_on_bad_images
from leadrrg.data.labels import labels_from_labeler
from leadrrg.data.manifests import load_split, read_records
from leadrrg.data.tokenizer import ReportTokenizer
from leadrrg.errors import LeadrrgError
from leadrrg.fetch import default_cache_dir
from leadrrg.model.losses import expert_targets
from leadrrg.runs.files import build_model
from leadrrg.train.distributed import EpochShardSampler, PositionSeeded, epoch_seed
from leadrrg.train.guard import ignore_interrupts
from leadrrg.train.startup import Startup, default_header_cache, shared_bad_images

logger = logging.getLogger(__name__)

TRAIN_SPLIT = "train"
VAL_SPLIT = "val"


@dataclass
class TrainingTask:
    config: RunConfig
    tokenizer: ReportTokenizer
    model: nn.Module
    train_dataset: Dataset
    val_dataset: Dataset | None
    collator: ReportCollator


def load_split_studies(
    config: RunConfig,
    split: str,
    label_cache: Path | None,
    required: bool = True,
    records: list | None = None,
    startup: Startup | None = None,
) -> list:
    """Studies of `split` (from `records` when the root was read already), with missing labels filled by the
    rule-based labeler (cached by report)."""
    return label_studies(split_studies(config, split, records, required), split, label_cache, startup)


def label_studies(
    studies: list, split: str, label_cache: Path | None, startup: Startup | None = None
) -> list:
    """`studies` with missing labels filled by the rule-based labeler (cached by report in `label_cache`)."""
    unlabelled = len({s.report for s in studies if s.labels is None})
    if not unlabelled:
        return studies
    with (startup or Startup(False)).phase(
        f"labeling {unlabelled:,} {split} reports", unlabelled, "reports", stage="labels"
    ) as bar:
        progress = lambda done, total: bar.update(done - bar.count)  # noqa: E731
        if label_cache is None:
            with tempfile.TemporaryDirectory() as tmp:
                return labels_from_labeler(studies, Path(tmp) / "labels.csv", progress)
        studies = labels_from_labeler(studies, label_cache, progress)
        bar.note = f"{bar.count:,} by the labeler, {unlabelled - bar.count:,} from its cache ({label_cache})"
    return studies


def split_studies(config: RunConfig, split: str, records: list | None, required: bool) -> list:
    """The studies of `split`; [] when the data has no such split and it is not `required`."""
    try:
        return load_split(config.data, split, records).studies
    except LeadrrgError:
        if required:
            raise
        return []


def labelled_studies(
    studies: list, split: str, label_cache: Path, ctx: DistContext, startup: Startup
) -> list:
    """`label_studies` on the main process (the only one that labels and writes the cache); the others
    receive its labels."""
    if ctx.is_main:
        studies = label_studies(studies, split, label_cache, startup)
        broadcast_object([s.labels for s in studies], ctx)
        return studies
    labels = broadcast_object(None, ctx)
    return [dataclasses.replace(s, labels=row) for s, row in zip(studies, labels)]


def default_label_cache() -> Path:
    """Where labeler output for unlabelled data sets is cached, keyed by report hash (shared across data sets;
    versioned so a changed labeler does not reuse stale labels)."""
    return default_cache_dir() / "labels" / f"report_labels-{__version__}.csv"


def build_tokenizer(config: RunConfig, train_reports: list[str], ctx: DistContext) -> ReportTokenizer:
    """The pretrained LLM's tokenizer, or a BPE trained on the training reports (on rank 0, shared)."""
    decoder = config.model.decoder
    if decoder.pretrained_path:
        return ReportTokenizer.from_pretrained(decoder.pretrained_path)
    serialized = None
    if ctx.is_main:
        serialized = ReportTokenizer.train(train_reports, decoder.vocab_size).backend.to_str()
    serialized = broadcast_object(serialized, ctx)
    return ReportTokenizer(Tokenizer.from_str(serialized), "bpe")


def resolve_paths(config: RunConfig) -> RunConfig:
    """The config as saved with the run: local paths made absolute, so the run loads from anywhere."""
    decoder, vision = config.model.decoder, config.model.vision
    if decoder.pretrained_path:
        decoder.pretrained_path = str(Path(decoder.pretrained_path).expanduser().resolve())
    if vision.pretrained_path:
        vision.pretrained_path = str(Path(vision.pretrained_path).expanduser().resolve())
    if config.data.root:
        config.data.root = str(Path(config.data.root).expanduser().resolve())
    return config


def training_datasets(
    config: RunConfig, train_studies: list, val_studies: list, bad: list, startup: Startup
) -> tuple[StudyDataset, StudyDataset | None]:
    """The train dataset (with counterfactual studies, side flips and hedge edits as `model.grounding` asks) and the
    val dataset (None without readable val studies)."""
    # Counterfactual studies teach a decoder that reads p; with fusion none or aux nothing reads it.
    vision, max_views, skip = config.model.vision, config.model.max_views, config.data.skip_bad_images
    injection, grounding = config.model.injection, config.model.grounding
    rate = grounding.counterfactual if injection.decoder_reads_experts else 0.0
    attributes = injection.has_experts and config.model.experts.attributes
    side_flip = grounding.side_flip if attributes and injection.decoder_reads_experts else 0.0
    hedge = grounding.hedge and injection.decoder_reads_experts
    hedge_edit = grounding.hedge_edit if hedge else 0.0
    editor = None
    if rate > 0 or side_flip > 0 or hedge_edit > 0:
        total = len(train_studies)
        text = f"building counterfactual banks from {total:,} reports"
        with startup.phase(text, total, "reports", stage="counterfactual banks") as bar:
            reports = [s.report for s in train_studies]
            editor = CounterfactualEditor(reports, config.model.experts.names, progress=bar.update)
    train_dataset = StudyDataset(
        train_studies,
        vision,
        max_views,
        train=True,
        skip_bad_images=skip,
        counterfactual=editor,
        counterfactual_rate=rate,
        augment=config.data.augment,
        side_flip_rate=side_flip,
        attributes=attributes,
        bad_images=bad,
        hedge=hedge,
        hedge_edit_rate=hedge_edit,
    )
    val_dataset = (
        StudyDataset(
            val_studies,
            vision,
            max_views,
            train=False,
            skip_bad_images=skip,
            attributes=attributes,
            bad_images=bad,
            hedge=hedge,
        )
        if val_studies
        else None
    )
    if val_dataset is not None and not len(val_dataset):
        logger.warning("no readable study in the %r split: training without validation", VAL_SPLIT)
        val_dataset = None
    return train_dataset, val_dataset


def build_task(
    config: RunConfig,
    ctx: DistContext,
    tokenizer: ReportTokenizer | None = None,
    label_cache: Path | None = None,
    quiet: bool = False,
) -> TrainingTask:
    """Studies, tokenizer (trained unless given, e.g. on resume), model (seeded init), datasets; each phase
    announced on stderr by the main process unless `quiet` (`Startup`)."""
    if not config.data.root:
        raise LeadrrgError("data.root is empty; pass --data DIR (a data root) or set data.root")
    startup = Startup(ctx.is_main and not quiet)
    train_studies, val_studies, bad = load_task_data(
        config, ctx, label_cache or default_label_cache(), startup
    )
    if tokenizer is None:
        with startup.phase(f"training the tokenizer on {len(train_studies):,} reports", stage="tokenizer"):
            tokenizer = build_tokenizer(config, [s.report for s in train_studies], ctx)
    torch.manual_seed(config.train.seed)  # the same initial weights on every rank and every run
    with startup.phase("building the model", stage="model"):
        model = build_model(config, tokenizer)
    check_sequence_fits(model, tokenizer, config)
    fit_context_balance(model, train_studies)
    train_dataset, val_dataset = training_datasets(config, train_studies, val_studies, bad, startup)
    check_batch_fits(len(train_dataset), config.train.batch_size, ctx.world_size)
    collator = ReportCollator(tokenizer, config.data.max_report_tokens)
    logger.info(
        "data loaded: %d train and %d val studies from %s (%s); model built: %.1f M parameters",
        len(train_dataset),
        len(val_dataset) if val_dataset is not None else 0,
        config.data.root,
        config.data.format,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    startup.say(startup.summary())
    return TrainingTask(config, tokenizer, model, train_dataset, val_dataset, collator)


def load_task_data(
    config: RunConfig, ctx: DistContext, label_cache: Path, startup: Startup
) -> tuple[list, list, list[tuple[str, str]]]:
    """(train studies, val studies, every unreadable image of both): the root read once, the labels filled by
    the main process, the image headers checked once per run (raising on a bad image unless
    data.skip_bad_images)."""
    data = config.data
    with startup.phase(f"reading the {data.format} data at {data.root}", stage="data") as phase:
        records = read_records(data)
        train_studies = split_studies(config, TRAIN_SPLIT, records, required=True)
        val_studies = split_studies(config, VAL_SPLIT, records, required=False)
        phase.note = (
            f"{len(records):,} records, {len(train_studies):,} train and {len(val_studies):,} val studies"
        )
    del records
    if not train_studies:
        raise LeadrrgError(
            f"the {TRAIN_SPLIT!r} split of {data.root} has no studies; expected a training split"
        )
    train_studies = labelled_studies(train_studies, TRAIN_SPLIT, label_cache, ctx, startup)
    val_studies = labelled_studies(val_studies, VAL_SPLIT, label_cache, ctx, startup)
    if not val_studies:
        logger.warning("no %r split in %s: training without validation", VAL_SPLIT, data.root)
    check_expert_names(config)
    max_views = config.model.max_views
    cache = default_header_cache(data.root)
    bad = shared_bad_images(train_studies + val_studies, max_views, ctx, startup, cache, data.root)
    if not data.skip_bad_images:  # every image the run will read is checked (headers) before the first step
        hint = "; fix or remove them, or set data.skip_bad_images=true to train without them"
        for split, studies in ((TRAIN_SPLIT, train_studies), (VAL_SPLIT, val_studies)):
            raise_on_bad_images(studies, max_views, f"the {split!r} split of {data.root}", hint, bad)
    return train_studies, val_studies, bad


def stage_plan(config: RunConfig, model: nn.Module) -> str | None:
    """The line announcing stage 1 when a run starts (None when there is none): how many steps, before how
    many joint steps, and how to turn it off. `train.max_steps` counts the joint steps only."""
    steps = config.model.grounding.expert_warmup_steps
    if steps == 0 or getattr(model, "experts", None) is None:
        return None
    return (
        f"stage 1: {steps} expert warm-up steps (vision encoder and experts on the labels), then "
        f"{config.train.max_steps} joint steps (train.max_steps); "
        "--set model.grounding.expert_warmup_steps=0 skips stage 1"
    )


def check_expert_names(config: RunConfig) -> None:
    """Training supervises each expert with its CheXpert label: every expert must be named after one."""
    if not config.model.injection.has_experts:
        return
    unknown = [name for name in config.model.experts.names if name not in OBSERVATIONS]
    if unknown:
        raise LeadrrgError(
            f"model.experts.names has {unknown}, not CheXpert observations; training supervises each expert with "
            f"its label, so expected names among: {', '.join(OBSERVATIONS)}"
        )


def check_sequence_fits(model: nn.Module, tokenizer: ReportTokenizer, config: RunConfig) -> None:
    """Refuse a decoder whose position table cannot hold a training sequence (visual prompt + BOS + prompt +
    data.max_report_tokens), naming the settings; the visual prompt length is measured on a blank study."""
    limit = getattr(model.lm.config, "max_position_embeddings", None) or getattr(
        model.lm.config, "n_positions", None
    )
    if limit is None:
        return
    vision, views = config.model.vision, config.model.max_views
    images = torch.zeros(1, views, vision.channels, vision.image_size, vision.image_size)  # (1, V, C, S, S)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        visual = model.encode_study(images, torch.ones(1, views, dtype=torch.bool)).num_prompt_tokens
    model.train(was_training)
    prompt = 1 + len(tokenizer.prompt_ids)
    needed = visual + prompt + config.data.max_report_tokens
    if needed > limit:
        where = (
            "model.decoder.max_positions"
            if not config.model.decoder.pretrained_path
            else "the pretrained decoder's max_position_embeddings"
        )
        raise LeadrrgError(
            f"{where} is {limit} but a training sequence needs {needed} positions ({visual} visual tokens, "
            f"{prompt} prompt tokens, data.max_report_tokens={config.data.max_report_tokens}); raise "
            "model.decoder.max_positions, lower data.max_report_tokens, or raise model.visual_pool"
        )


def fit_context_balance(model: nn.Module, studies: list) -> None:
    """Fit the experts' context balance (grounding.balance=context) on the training labels; the same on every
    rank and on every resume (a deterministic fit of the same labels)."""
    balance = getattr(model, "balance", None)
    if balance is None:
        return
    labels = torch.as_tensor(np.stack([s.labels for s in studies]), dtype=torch.float32)  # (N, 14)
    targets, weights = expert_targets(model.select_expert_labels(labels), model.config.label_policy)
    balance.fit(targets, weights)


def check_batch_fits(num_studies: int, batch_size: int, world_size: int) -> None:
    if num_studies // world_size < batch_size:
        raise LeadrrgError(
            f"the training split has {num_studies} studies, fewer than one batch per process "
            f"(train.batch_size={batch_size} x {world_size} processes); lower train.batch_size"
        )


def make_train_loader(task: TrainingTask, ctx: DistContext) -> tuple[DataLoader, EpochShardSampler]:
    """Per-rank loader of `train.batch_size` studies (last partial batch dropped) over a seeded sharded
    order; call `set_loader_epoch` before iterating an epoch."""
    train = task.config.train
    check_batch_fits(len(task.train_dataset), train.batch_size, ctx.world_size)
    sampler = EpochShardSampler(
        len(task.train_dataset), train.seed, ctx.rank, ctx.world_size, item_seeds=True
    )
    loader = DataLoader(
        PositionSeeded(task.train_dataset),
        batch_size=train.batch_size,
        sampler=sampler,
        drop_last=True,
        collate_fn=task.collator,
        num_workers=task.config.data.num_workers,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=False,
        generator=torch.Generator(),  # reseeded per epoch: worker seeds never touch the global RNG
        worker_init_fn=ignore_interrupts,  # Ctrl-C: the main process ends the step and saves it
    )
    return loader, sampler


def set_loader_epoch(loader: DataLoader, sampler: EpochShardSampler, epoch: int, start: int) -> None:
    """Read epoch `epoch` from global position `start` (the studies of the epoch all processes consumed)."""
    sampler.set_epoch(epoch, start=start)
    # Augmentation is seeded per item (PositionSeeded); this keeps the loader's own draws (worker base
    # seeds) off the global RNG and reproducible.
    loader.generator.manual_seed(epoch_seed(sampler.seed, epoch) + 1 + 1_000 * sampler.rank)


def make_val_loader(task: TrainingTask) -> DataLoader | None:
    if task.val_dataset is None:
        return None
    return DataLoader(
        task.val_dataset,
        batch_size=task.config.train.batch_size,
        shuffle=False,
        collate_fn=task.collator,
        num_workers=task.config.data.num_workers,
        generator=torch.Generator().manual_seed(task.config.train.seed),
        worker_init_fn=ignore_interrupts,
    )
