"""Evidence-consistent decoding (`decode.rerank`): a report that contradicts its experts is decoded again and the
least contradicting candidate kept; side contradictions."""

from __future__ import annotations

import zlib

import pytest
import torch

import leadrrg
from leadrrg.config import DecodeConfig
from leadrrg.data.manifests import load_studies
from leadrrg.errors import LeadrrgError
from leadrrg.inference.evidence import contradictions
from leadrrg.inference.predict import generate_split
from leadrrg.inference.rerank import candidate_config, disagreement, rerank
from leadrrg.inference.result import ReportResult
from leadrrg.inference.steps import sample_next
from leadrrg.labeler.attributes import report_attributes
from leadrrg.labeler.rules import report_defects
from leadrrg.serve.render import expert_table
from tests.fixtures_data import make_jsonl, write_png
from tests.test_generate_cli import write_tiny_run


def result(text: str, kinds: list[tuple[str, str]]) -> ReportResult:
    return ReportResult(
        report=text,
        expert_probs={},
        findings={},
        contradictions=[{"expert": name, "p": 0.9, "threshold": 0.7, "kind": kind} for name, kind in kinds],
    )


def test_only_contradicting_reports_are_redecoded_and_the_least_contradicting_candidate_wins():
    decode = DecodeConfig(rerank=3)
    first = [
        result("agrees", []),
        result("two", [("Edema", "omitted"), ("Atelectasis", "unsupported")]),
        result("one", [("Edema", "omitted")]),
    ]
    candidates = {
        1: [
            result("three", [("Edema", "omitted")] * 3),
            result("tie", [("Edema", "omitted")] * 2),
            result("zero", []),
        ],
        2: [
            result("also one", [("Fracture", "side")]),
            result("one more", [("Edema", "omitted")]),
            result("two sides", [("Fracture", "side"), ("Edema", "severity")]),
        ],
    }
    calls, batches = [], []

    def redecode(rows, config, generators):
        assert len(rows) == len(generators)
        batches.append(list(rows))
        out = []
        for i, generator in zip(rows, generators):
            calls.append((i, config.strategy, config.temperature, config.rerank, generator.initial_seed()))
            out.append(candidates[i][sum(1 for c in calls if c[0] == i) - 1])
        return out

    chosen = rerank(first, decode, redecode, seed=5, device=torch.device("cpu"))
    assert [r.report for r in chosen] == ["agrees", "zero", "also one"]  # findings first, then side and size
    assert {c[0] for c in calls} == {1, 2}  # the agreeing study is never decoded again
    assert batches == [
        [1, 2],
        [1, 2],
        [1, 2],
    ]  # each round decodes the studies still contradicting in one batch
    assert [c[0] for c in calls].count(1) == 3  # stops at the first candidate without contradictions
    assert all(c[1:4] == ("sample", 0.8, 0) for c in calls)  # sampled, never reranked itself
    seeds_1 = [c[4] for c in calls if c[0] == 1]
    assert (
        seeds_1 == [c[4] for c in calls if c[0] == 2] and len(set(seeds_1)) == 3
    )  # per round, not per study
    assert rerank(first, DecodeConfig(rerank=0), redecode, 5, torch.device("cpu")) == first


def test_a_tie_keeps_the_first_report_and_the_derived_no_finding_is_not_counted():
    decode = DecodeConfig(rerank=2)
    first = [result("first", [("Edema", "omitted"), ("No Finding", "omitted")])]
    assert disagreement(first[0], decode) == (1, 0, 0)
    assert disagreement(first[0], DecodeConfig(derive_no_finding=False)) == (2, 0, 0)
    tie = result("tie", [("Atelectasis", "omitted")])
    assert (
        rerank(first, decode, lambda rows, c, g: [tie] * len(rows), 0, torch.device("cpu"))[0].report
        == "first"
    )
    assert candidate_config(decode).rerank == 0  # a candidate is never reranked itself
    assert candidate_config(decode).top_p == 0.95 and candidate_config(decode).strategy == "sample"


def test_a_report_that_denies_what_it_states_or_repeats_a_sentence_is_decoded_again():
    decode = DecodeConfig(rerank=2)
    assert report_defects("large right pneumothorax . no pneumothorax .") == (("Pneumothorax",), 0)
    assert report_defects("small bilateral pleural effusions . small bilateral pleural effusions .") == (
        (),
        1,
    )
    assert report_defects("no pneumothorax . heart size is normal . no pleural effusion .") == ((), 0)
    # the experts' contradictions name a finding the report states and denies, whatever its p
    told = {"Pneumothorax": 0.9, "Edema": 0.1}
    found = contradictions(
        told, {"Pneumothorax": 0.7, "Edema": 0.7}, {"Pneumothorax": 1}, conflicting=("Pneumothorax",)
    )
    assert found == [{"expert": "Pneumothorax", "p": 0.9, "threshold": 0.7, "kind": "conflicting"}]
    assert "denied" in expert_table(told, {"Pneumothorax": 0.7, "Edema": 0.7}, found)
    first = [
        result("large right pneumothorax . no pneumothorax .", [("Pneumothorax", "conflicting")]),
        result("mild edema . mild edema .", []),
        result("mild edema .", []),
    ]
    assert [disagreement(r, decode) for r in first] == [(1, 0, 0), (0, 0, 1), (0, 0, 0)]
    fixed = {0: result("large right pneumothorax .", []), 1: result("mild edema . no effusion .", [])}
    chosen = rerank(first, decode, lambda rows, c, g: [fixed[i] for i in rows], 0, torch.device("cpu"))
    assert [r.report for r in chosen] == [
        "large right pneumothorax .",
        "mild edema . no effusion .",
        "mild edema .",
    ]
    # an omission still counts before a repeated sentence: the repeat alone does not win over fewer contradictions
    omits = result("mild edema .", [("Atelectasis", "omitted")])
    repeats = result("mild edema . atelectasis . atelectasis .", [])
    assert disagreement(repeats, decode) < disagreement(omits, decode)


def test_a_generated_report_that_states_and_denies_a_finding_is_marked_conflicting(generator, monkeypatch):
    model, images = generator
    name = next(n for n in model.expert_names if n != "No Finding")
    monkeypatch.setattr("leadrrg.inference.api.report_defects", lambda text: ((name,), 0))
    kinds = [(c["expert"], c["kind"]) for c in model.generate(images[0], rerank=0).contradictions]
    assert (name, "conflicting") in kinds


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_decode_rerank_must_be_a_whole_number(value):
    with pytest.raises(LeadrrgError, match="decode.rerank"):
        DecodeConfig(rerank=value)
    with pytest.raises(LeadrrgError, match="decode.rerank_temperature"):
        DecodeConfig(rerank_temperature=0)
    with pytest.raises(LeadrrgError, match="decode.rerank_top_p"):
        DecodeConfig(rerank_top_p=0)


def test_a_finding_stated_on_another_side_or_severity_than_its_expert_reads_is_a_contradiction():
    report = "moderate left pleural effusion . no pneumothorax . mild right basilar atelectasis ."
    stated = report_attributes(report)
    assert stated["Pleural Effusion"]["side"] == "left" and stated["Atelectasis"]["severity"] == "mild"
    probs = {"Pleural Effusion": 0.9, "Atelectasis": 0.95, "Pneumothorax": 0.1}
    thresholds = dict.fromkeys(probs, 0.7)
    findings = {"Pleural Effusion": 1, "Atelectasis": 1, "Pneumothorax": 0}
    read = {
        "Pleural Effusion": {"side": "right", "severity": "moderate"},
        "Atelectasis": {"side": "right", "severity": "large"},
        "Pneumothorax": {"side": "left"},
    }
    out = contradictions(probs, thresholds, findings, expert_attributes=read, stated_attributes=stated)
    entry = {"p": 0.9, "threshold": 0.7}
    assert out == [
        {
            "expert": "Pleural Effusion",
            **entry,
            "kind": "side",
            "expert_value": "right",
            "stated_value": "left",
        },
        {
            "expert": "Atelectasis",
            "p": 0.95,
            "threshold": 0.7,
            "kind": "severity",
            "expert_value": "large",
            "stated_value": "mild",
        },
    ]
    assert contradictions(probs, thresholds, findings) == []  # no attributes given: presence only
    below = contradictions(
        {"Pleural Effusion": 0.6}, thresholds, findings, expert_attributes=read, stated_attributes=stated
    )
    assert [c["kind"] for c in below] == ["unsupported"]  # below its threshold: unsupported, sides aside
    assert "stated left, expert reads right" in expert_table(probs, thresholds, out)


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    data = make_jsonl(tmp_path_factory.mktemp("data"), counts={"train": 2, "val": 2, "test": 1}, views=1)
    run = write_tiny_run(tmp_path_factory.mktemp("run") / "run", data, max_new_tokens=8)
    return leadrrg.load(run, device="cpu"), [str(write_png(data / f"s{i}.png", seed=i)) for i in range(4)]


def test_reranked_reports_contradict_no_more_than_greedy_and_do_not_depend_on_the_batch(generator):
    model, images = generator
    names = model.expert_names
    told = {name: 1.0 for name in names if name != "No Finding"}  # every finding present: greedy omits some
    greedy = [model.generate(image, expert_probs=told, rerank=0) for image in images]
    decode = model.config.decode
    assert any(disagreement(r, decode) != (0, 0) for r in greedy)
    reranked = [model.generate(image, expert_probs=told, rerank=4) for image in images]
    for before, after in zip(greedy, reranked):
        assert disagreement(after, decode) <= disagreement(before, decode)
        if disagreement(before, decode) == (0, 0):
            assert after.report == before.report
    assert [model.generate(image, expert_probs=told, rerank=4).report for image in images] == [
        r.report for r in reranked
    ]  # deterministic
    batched = model.generate_batch(images, batch_size=3, rerank=4)
    single = [model.generate(image, rerank=4) for image in images]
    assert [r.report for r in batched] == [r.report for r in single]


def test_per_row_generators_draw_for_each_row_what_it_draws_alone():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    decode = DecodeConfig(strategy="sample", temperature=0.8)
    seeds = (1, 2, 3)
    batched = sample_next(logits, decode, [torch.Generator().manual_seed(s) for s in seeds])
    alone = [
        sample_next(logits[i : i + 1], decode, torch.Generator().manual_seed(s)).item()
        for i, s in enumerate(seeds)
    ]
    assert batched.tolist() == alone
    shared = sample_next(
        logits, decode, torch.Generator().manual_seed(1)
    )  # one generator for the batch, as before
    assert shared.shape == (3,)


def test_a_split_reranked_across_batches_gets_the_reports_of_reranking_each_study_alone(
    generator, monkeypatch
):
    model, _ = generator
    # An untrained decoder's candidates contradict their experts alike; score them by a checksum of their text
    # instead, so that reranking picks among candidates that differ (high temperature, no nucleus).
    score = lambda result, decode: (zlib.crc32(result.report.encode()) % 1000, 0)  # noqa: E731
    monkeypatch.setattr("leadrrg.inference.rerank.disagreement", score)
    studies = load_studies(model.config.data, "train") + load_studies(model.config.data, "val")
    studies += load_studies(model.config.data, "test")
    bits = torch.arange(len(model.expert_names))
    told = ((torch.arange(1, len(studies) + 1)[:, None] >> bits) & 1).float()  # study i: the bits of i + 1
    decode = model.decode_config(rerank=4, rerank_temperature=3.0, rerank_top_p=1.0)
    alone = [
        generate_split(model, [study], decode, expert_probs=told[i : i + 1])[0]["generated"]
        for i, study in enumerate(studies)
    ]
    assert len(set(alone)) >= 3  # the evidence gives studies their own candidates
    greedy = generate_split(model, studies, model.decode_config(rerank=0), batch_size=3, expert_probs=told)
    assert [r["generated"] for r in greedy] != alone  # some were reranked
    split = generate_split(model, studies, decode, batch_size=3, expert_probs=told)
    assert [r["generated"] for r in split] == alone
    assert [r["id"] for r in split] == [s.id for s in studies]
