"""data.group_by_length: training batches of similar report length (`leadrrg.train.sampler`). Every study once per
epoch, the same order for a seed, a resume at the same place, disjoint shares of one global batch per process,
and less padding than the plain order."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from leadrrg.collectives import DistContext
from leadrrg.config import apply_overrides, load_preset
from leadrrg.config._run import DataConfig
from leadrrg.errors import LeadrrgError
from leadrrg.train.distributed import EpochShardSampler
from leadrrg.train.sampler import MEGA_BATCHES, LengthGroupedSampler, length_grouped_order, padding_share
from tests.test_train_helpers import make_synth, tiny_config


def _lengths(count: int, seed: int = 0) -> list[int]:
    """Report lengths as skewed as real ones: most short, a long tail."""
    rng = np.random.default_rng(seed)
    return (6 + rng.gamma(2.0, 12.0, count)).astype(int).tolist()


def _batches(indices: list[int], size: int) -> list[list[int]]:
    return [indices[i : i + size] for i in range(0, len(indices) - len(indices) % size, size)]


@pytest.mark.parametrize(("count", "group"), [(1, 4), (7, 4), (100, 8), (403, 8), (1000, 3)])
def test_the_grouped_order_is_a_permutation(count, group):
    lengths = _lengths(count)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(1)).tolist()
    grouped = length_grouped_order(order, lengths, group, torch.Generator().manual_seed(2))
    assert sorted(grouped) == list(range(count))
    tail = count % group
    assert grouped[count - tail :] == order[count - tail :]  # the tail no global batch can hold stays last


def test_each_global_batch_comes_from_one_sorted_mega_batch():
    lengths, group = _lengths(2_000), 8
    order = list(range(2_000))
    grouped = length_grouped_order(order, lengths, group, torch.Generator().manual_seed(0))
    mega = MEGA_BATCHES * group
    for batch in _batches(grouped, group):
        assert (
            len({index // mega for index in batch}) == 1
        )  # order is the identity: the mega-batch is index // mega
        values = [lengths[index] for index in batch]
        assert values == sorted(values)
    assert max(lengths[i] for i in grouped[:group]) == max(lengths)  # the longest batch first


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_every_study_once_per_epoch_and_disjoint_shares_per_process(world_size):
    lengths, batch = _lengths(250), 4
    ranks = [
        LengthGroupedSampler(lengths, seed=5, batch_size=batch, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    for epoch in (0, 1):
        for sampler in ranks:
            sampler.set_epoch(epoch)
        order = ranks[0].epoch_order()
        assert sorted(order) == list(range(250))
        read = [list(sampler) for sampler in ranks]
        seen = [index for share in read for index in share]
        assert (
            len(seen) == len(set(seen)) == 250 - 250 % world_size
        )  # each at most once, all but the ranks' tail
        global_batch = batch * world_size
        for k in range(len(read[0]) // batch):  # step k: the ranks' batches are one global batch of the order
            step = [index for share in read for index in share[k * batch : (k + 1) * batch]]
            assert sorted(step) == sorted(order[k * global_batch : (k + 1) * global_batch])
    assert ranks[0].epoch_order() != (
        ranks[0].set_epoch(0) or ranks[0].epoch_order()
    )  # a new order per epoch


def test_the_order_is_a_function_of_the_seed_and_epoch():
    lengths = _lengths(300)

    def order(seed: int, epoch: int) -> list[int]:
        sampler = LengthGroupedSampler(lengths, seed=seed, batch_size=4)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(3, 1) == order(3, 1)
    assert order(3, 1) != order(4, 1) and order(3, 1) != order(3, 2)
    plain = EpochShardSampler(300, seed=3)
    plain.set_epoch(1)
    assert order(3, 1) != list(plain)  # grouped, not the plain permutation


def test_a_resumed_sampler_reads_the_rest_of_the_epoch():
    lengths, batch, world_size = _lengths(203), 4, 2
    whole = [LengthGroupedSampler(lengths, 7, batch, rank=r, world_size=world_size) for r in range(2)]
    resumed = [LengthGroupedSampler(lengths, 7, batch, rank=r, world_size=world_size) for r in range(2)]
    done = 5 * batch * world_size  # five steps of both ranks: the state's samples_in_epoch
    for first, second in zip(whole, resumed):
        first.set_epoch(2)
        second.set_epoch(2, start=done)
        assert list(second) == list(first)[done // world_size :]
    one = LengthGroupedSampler(lengths, 7, batch * world_size)  # the same global batch in one process
    one.set_epoch(2, start=done)
    assert list(one) == whole[0].epoch_order()[done:]


def test_grouping_reduces_padding():
    lengths, batch = _lengths(4_000), 16
    plain, grouped = EpochShardSampler(4_000, seed=0), LengthGroupedSampler(lengths, seed=0, batch_size=batch)
    plain_share = padding_share(lengths, _batches(list(plain), batch))
    grouped_share = padding_share(lengths, _batches(list(grouped), batch))
    assert plain_share > 0.3 and grouped_share < plain_share / 4, (plain_share, grouped_share)
    assert padding_share([3, 3], [[0, 1]]) == 0.0 and padding_share([1, 3], [[0, 1]]) == pytest.approx(1 / 3)


def test_sequence_lengths_are_the_collated_rows(tmp_path):
    from transformers import PreTrainedTokenizerFast

    from leadrrg.data.collate import ReportCollator
    from leadrrg.data.tokenizer import BOS_TOKEN, EOS_TOKEN, ReportTokenizer

    reports = ["Heart size is normal.", "", "Small left pleural effusion. " * 9, "Heart size is normal."]
    bpe = ReportTokenizer.train(reports * 20, 300)
    hf = PreTrainedTokenizerFast(tokenizer_object=bpe.backend, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN)
    hf.save_pretrained(tmp_path / "lm")
    for tokenizer in (bpe, ReportTokenizer.from_pretrained(tmp_path / "lm")):
        for limit in (4, 96):  # the long report cut to max_report_tokens, as the collator cuts it
            collator = ReportCollator(tokenizer, limit)
            items = [
                {
                    "report": r,
                    "id": str(i),
                    "images": torch.zeros(1),
                    "view_mask": torch.ones(1),
                    "labels": [0.0],
                }
                for i, r in enumerate(reports)
            ]
            rows = collator(items)["attention_mask"].sum(1).tolist()
            assert (
                collator.sequence_lengths(reports)
                == rows
                == [len(collator.encode_report(r)) for r in reports]
            )
    assert ReportCollator(bpe, 8).sequence_lengths([]) == []


def _padding_of_loader(task, ctx, group_by_length: bool) -> tuple[float, list[list[str]]]:
    from leadrrg.train.build import make_train_loader, set_loader_epoch

    loader, sampler = make_train_loader(task, ctx, group_by_length=group_by_length)
    set_loader_epoch(loader, sampler, 0, 0)
    real = total = 0
    ids = []
    for batch in loader:
        real += int(batch["attention_mask"].sum())
        total += batch["attention_mask"].numel()
        ids.append(batch["ids"])
    return 1 - real / total, ids


@pytest.fixture(scope="module")
def synth_task(tmp_path_factory):
    from leadrrg.train.build import build_task

    root = make_synth(tmp_path_factory.mktemp("synth") / "data", train=96, val=4)
    config = tiny_config(root, "data.max_report_tokens=96", "data.group_by_length=true", "train.batch_size=8")
    return build_task(config, DistContext(), label_cache=tmp_path_factory.mktemp("labels") / "labels.csv")


def test_the_training_loader_pads_less_and_reads_each_study_once(synth_task):
    grouped, grouped_ids = _padding_of_loader(synth_task, DistContext(), True)
    plain, plain_ids = _padding_of_loader(synth_task, DistContext(), False)
    print(f"padding share of the report positions: plain {plain:.3f}, grouped {grouped:.3f}")
    assert grouped < plain * 0.7, (plain, grouped)
    assert sorted(sum(grouped_ids, [])) == sorted(study.id for study in synth_task.train_dataset.studies)
    assert len(sum(plain_ids, [])) == len(set(sum(grouped_ids, [])))
    lengths = synth_task.report_lengths  # the collator's own sequence lengths
    first = synth_task.train_dataset.studies[0].report
    assert lengths[0] == len(synth_task.collator.encode_report(first))


def test_a_resumed_stream_continues_with_the_same_batches(synth_task):
    from leadrrg.train.build import make_train_loader
    from leadrrg.train.state import TrainerState
    from leadrrg.train.step import batch_stream

    def stream(state: TrainerState):
        loader, sampler = make_train_loader(synth_task, DistContext())
        return batch_stream(loader, sampler, state)

    whole = stream(TrainerState())
    reference = [next(whole)["ids"] for _ in range(17)]  # 12 batches an epoch: into the second epoch
    for done in (5, 12, 14):  # stopped inside the first epoch, at its end, inside the second
        stopped = TrainerState()
        first = stream(stopped)
        for _ in range(done):
            next(first)
        saved = TrainerState(
            epoch=stopped.epoch, samples_in_epoch=stopped.samples_in_epoch
        )  # as checkpointed
        resumed = stream(saved)
        assert [next(resumed)["ids"] for _ in range(17 - done)] == reference[done:], done


def test_the_setting_is_checked_and_off_by_default():
    assert DataConfig().group_by_length is False and load_preset("demo").data.group_by_length is False
    with pytest.raises(LeadrrgError, match="data.group_by_length is 'yes'; expected true or false"):
        DataConfig(group_by_length="yes")
    with pytest.raises(LeadrrgError, match="group_by_length"):
        apply_overrides(load_preset("demo"), ["data.group_by_length=2"])


def test_a_resume_that_regroups_its_epoch_warns(tmp_path, caplog):
    from leadrrg.train.resume import warn_on_regrouping

    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    state = {"step": 3, "epoch": 1, "samples_in_epoch": 48, "world_size": 2, "optimizer": {}}
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    run = apply_overrides(load_preset("demo"), ["data.group_by_length=true", "train.batch_size=8"])
    same = apply_overrides(run, ["train.batch_size=4"])
    with caplog.at_level(logging.WARNING, logger="leadrrg.train.resume"):
        assert not warn_on_regrouping(run, run, checkpoint, 2)  # the same global batch (8 x 2)
        assert not warn_on_regrouping(same, run, checkpoint, 4)  # 4 x 4: the same global batch again
        assert not caplog.records
        assert warn_on_regrouping(run, run, checkpoint, 1)  # 8 x 1
        assert (
            "grouped by length in global batches of 16 and is now grouped by length in global batches of 8"
            in (caplog.text)
        )
        off = apply_overrides(run, ["data.group_by_length=false"])
        assert warn_on_regrouping(off, run, checkpoint, 2) and "now not grouped by length" in caplog.text
        state["samples_in_epoch"] = 0  # at an epoch's start nothing is regrouped
        (checkpoint / "trainer_state.json").write_text(json.dumps(state))
        assert not warn_on_regrouping(off, run, checkpoint, 2)


def test_a_killed_grouped_run_resumes_as_if_uninterrupted(tmp_path):
    # The joint stage reads grouped batches (stage 1 does not: it reads no report); 24 studies of batch 4: an
    # epoch boundary at step 6.
    from safetensors.torch import load_file

    from leadrrg.train.loop import train

    root = make_synth(tmp_path / "data", train=24, val=4)
    config = tiny_config(
        root,
        "data.group_by_length=true",
        "data.max_report_tokens=96",
        "model.grounding.expert_warmup_steps=2",
        "train.max_steps=8",
        "train.save_every=3",
        "train.eval_every=0",
        "model.decoder.dropout=0.1",
    )
    train(config, tmp_path / "straight", quiet=True)

    def kill_at_step_5(step, record):
        if step == 5:  # two steps past the checkpoint at 3
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "resumed", callbacks=[kill_at_step_5], quiet=True)
    assert json.loads((tmp_path / "resumed/checkpoint/trainer_state.json").read_text())["step"] == 3
    train(config, tmp_path / "resumed", resume=True, quiet=True)
    straight, resumed = (load_file(tmp_path / run / "model.safetensors") for run in ("straight", "resumed"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(straight[key], resumed[key], rtol=0, atol=1e-6, msg=key)
