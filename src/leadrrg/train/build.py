"""Everything a training run needs, built from a RunConfig: studies, tokenizer, model, data loaders.

The data order is a pure function of (train.seed, epoch) (`EpochShardSampler`; with data.group_by_length, of the
global batch size too: `leadrrg.train.sampler`), and each item's augmentation a pure function of (train.seed, epoch,
position) (`PositionSeeded`): a resumed run reads exactly the batches an uninterrupted run would, with any number of
loader workers or processes, and the global torch RNG (dropout) is left to the checkpointed state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn
from torch.utils.data import DataLoader, Dataset

from leadrrg.collectives import DistContext, broadcast_object
from leadrrg.config import RunConfig
from leadrrg.constants import OBSERVATIONS
from leadrrg.data.collate import ReportCollator
from leadrrg.data.counterfactual import CounterfactualEditor
from leadrrg.data.dataset import StudyDataset, raise_on_bad_images
from leadrrg.data.tokenizer import ReportTokenizer
from leadrrg.errors import LeadrrgError
from leadrrg.model.losses import expert_targets
from leadrrg.runs.files import build_model
from leadrrg.train.distributed import EpochShardSampler, PositionSeeded, epoch_seed
from leadrrg.train.guard import ignore_interrupts
from leadrrg.train.sampler import LengthGroupedSampler
from leadrrg.train.startup import (
    TRAIN_SPLIT,
    VAL_SPLIT,
    Startup,
    default_header_cache,
    default_label_cache,
    load_split_studies,  # noqa: F401  (benchmarks/bench_data.py imports it from here)
    read_task_studies,
    shared_bad_images,
)

logger = logging.getLogger(__name__)


@dataclass
class TrainingTask:
    config: RunConfig
    tokenizer: ReportTokenizer
    model: nn.Module
    train_dataset: Dataset
    val_dataset: Dataset | None
    collator: ReportCollator
    report_lengths: list[int] | None = None  # each train study's sequence length (data.group_by_length), once


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
    check_expert_names(config)
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
    """(train studies, val studies, every unreadable image of both): the root read and the labels filled once, by the
    main process (`read_task_studies`), the image headers checked once per run (raising on a bad image unless
    data.skip_bad_images)."""
    data = config.data
    train_studies, val_studies = read_task_studies(config, ctx, label_cache, startup)
    if not val_studies:
        logger.warning("no %r split in %s: training without validation", VAL_SPLIT, data.root)
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


def make_train_loader(
    task: TrainingTask,
    ctx: DistContext,
    group_by_length: bool | None = None,
    collate: Callable[[list[dict]], dict] | None = None,
) -> tuple[DataLoader, EpochShardSampler]:
    """Per-rank loader of `train.batch_size` studies (last partial batch dropped) over a seeded sharded
    order, grouped by report length with `group_by_length` (default: data.group_by_length; `leadrrg.train.sampler`),
    batched by `collate` (default: the task's report collator); call `set_loader_epoch` before iterating an epoch."""
    train = task.config.train
    check_batch_fits(len(task.train_dataset), train.batch_size, ctx.world_size)
    if task.config.data.group_by_length if group_by_length is None else group_by_length:
        lengths = train_report_lengths(task, ctx)
        sampler = LengthGroupedSampler(
            lengths, train.seed, train.batch_size, ctx.rank, ctx.world_size, item_seeds=True
        )
    else:
        sampler = EpochShardSampler(
            len(task.train_dataset), train.seed, ctx.rank, ctx.world_size, item_seeds=True
        )
    loader = DataLoader(
        PositionSeeded(task.train_dataset),
        batch_size=train.batch_size,
        sampler=sampler,
        drop_last=True,
        collate_fn=collate or task.collator,
        num_workers=task.config.data.num_workers,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=False,
        generator=torch.Generator(),  # reseeded per epoch: worker seeds never touch the global RNG
        worker_init_fn=ignore_interrupts,  # Ctrl-C: the main process ends the step and saves it
    )
    return loader, sampler


def train_report_lengths(task: TrainingTask, ctx: DistContext) -> list[int]:
    """Each training study's tokenised sequence length as the collator builds it (its report as written; an edit
    at load time changes it by a few tokens), counted by the main process and sent to the others, once per task."""
    if task.report_lengths is None:
        lengths = None
        if ctx.is_main:
            started = time.perf_counter()
            lengths = task.collator.sequence_lengths([study.report for study in task.train_dataset.studies])
            logger.info(
                "data.group_by_length: %d training reports tokenised in %.1f s (%d distinct)",
                len(lengths),
                time.perf_counter() - started,
                len({study.report for study in task.train_dataset.studies}),
            )
        task.report_lengths = broadcast_object(lengths, ctx)
    return task.report_lengths


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
