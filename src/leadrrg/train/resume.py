"""A run directory before and after training: opening one to resume it (the model config must be the run's),
and cleaning up after a new run that failed before its first checkpoint."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from leadrrg.collectives import DistContext, barrier
from leadrrg.config import RunConfig, first_difference, load_run_config, to_dict
from leadrrg.data.tokenizer import ReportTokenizer
from leadrrg.errors import LeadrrgError
from leadrrg.runs.files import CONFIG_FILE, TOKENIZER_DIR, weight_defining
from leadrrg.runs.provenance import check_base_models
from leadrrg.train import checkpoint as ckpt
from leadrrg.train.run_log import logged_anything

logger = logging.getLogger(__name__)


def open_for_resume(
    config: RunConfig, out_dir: Path, ctx: DistContext
) -> tuple[ReportTokenizer, Path | None]:
    """The run's tokenizer and complete checkpoint (None: it stopped before its first save; training then
    starts again from step 0), after checking that `config.model` is the run's."""
    if not (out_dir / CONFIG_FILE).is_file():
        raise LeadrrgError(
            f"cannot resume: {out_dir} is not a leadrrg run (no {CONFIG_FILE}); start it without --resume"
        )
    saved = load_run_config(out_dir / CONFIG_FILE)
    # Settings that do not change what the weights mean (a moved base model's path) may change.
    difference = first_difference(
        weight_defining(to_dict(config.model)), weight_defining(to_dict(saved.model)), "model"
    )
    check_base_models(out_dir, config)  # the same base weights, by fingerprint
    if difference:
        raise LeadrrgError(
            f"cannot resume {out_dir}: the model config differs from the run's at {difference}; "
            "train the new config into another directory (the run is left as it is)"
        )
    checkpoint_dir = ckpt.recover_checkpoint_dir(out_dir) if ctx.is_main else None  # rank 0 repairs a swap
    barrier(ctx)
    if not ctx.is_main:
        checkpoint_dir = ckpt.recover_checkpoint_dir(out_dir)
    if checkpoint_dir is None:
        logger.warning(
            "%s has no checkpoint (it stopped before its first save): training starts again from step 0",
            out_dir,
        )
    elif ctx.is_main:
        warn_on_regrouping(config, saved, checkpoint_dir, ctx.world_size)
    return ReportTokenizer.load(out_dir / TOKENIZER_DIR), checkpoint_dir


def data_grouping(config: RunConfig, world_size: int) -> str:
    """How a run orders each epoch: the plain permutation, or grouped by report length in global batches of
    train.batch_size x processes studies (`leadrrg.train.sampler`)."""
    if not config.data.group_by_length:
        return "not grouped by length"
    return f"grouped by length in global batches of {config.train.batch_size * world_size}"


def warn_on_regrouping(config: RunConfig, saved: RunConfig, checkpoint_dir: Path, world_size: int) -> bool:
    """Warn (and return True) when a resume inside an epoch orders that epoch otherwise than the checkpoint's run
    did: data.group_by_length turned on or off, or with it on another global batch (train.batch_size x processes).
    The rest of that epoch is then read in the new order from the same position: some of its studies twice, some
    not at all; later epochs read every study once. `saved`: the run's config.json (its last start)."""
    try:
        state = ckpt.read_trainer_state(checkpoint_dir)
    except LeadrrgError:
        return False  # restoring the checkpoint says what is wrong with it
    position, epoch = int(state.get("samples_in_epoch", 0) or 0), state.get("epoch", 0)
    before = data_grouping(saved, int(state.get("world_size", 1) or 1))
    now = data_grouping(config, world_size)
    if not position or before == now:
        return False
    logger.warning(
        "resume inside epoch %s (after %d of its studies): its order was %s and is now %s, so the rest of the "
        "epoch is read in another order (some studies twice, others not at all; the next epochs read each once); "
        "resume with the run's data.group_by_length, train.batch_size and processes to read it exactly",
        epoch,
        position,
        before,
        now,
    )
    return True


def clean_up_unstarted_run(out_dir: Path, existed: bool) -> None:
    """After a new run failed before its first checkpoint: if it logged nothing it is not a run, and nothing is
    left behind (an existing directory is emptied again); once it has logged, its logs tell why it stopped and
    stay, with config.json and the tokenizer (`--resume` starts it again from step 0)."""
    if ckpt.recover_checkpoint_dir(out_dir) is not None:
        return
    if logged_anything(out_dir):
        logger.warning(
            "%s stopped before its first checkpoint; its logs are kept there "
            "(`leadrrg train --resume --out %s` starts it again from step 0)",
            out_dir,
            out_dir,
        )
    elif not existed:
        shutil.rmtree(out_dir, ignore_errors=True)
    else:
        for path in out_dir.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
