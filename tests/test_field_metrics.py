"""The metrics papers report (docs/METRICS.md), each from a local folder on a tiny random-weight stand-in: the
folder lookup and its missing-weights messages, `leadrrg metrics setup/status`, RadGraph's partial reward
(golden values), BERTScore against a hand computation, RaTEScore's wrapper, CheXbert from the metrics folder,
and `leadrrg evaluate` reporting each metric or the reason it is missing. The package-backed paths skip when
their package (the `metrics` extra) is not installed."""

from __future__ import annotations

import json
import sys

import pytest

from leadrrg import cli
from leadrrg.errors import LeadrrgError
from leadrrg.metrics import local_models
from leadrrg.metrics.field import FIELD_METRICS, field_metrics, unavailable
from leadrrg.metrics.local_models import METRICS_DIR_ENV, folder_reason, metrics_dir, model_folder
from leadrrg.metrics.radgraph import partial_reward, radgraph_partial_f1
from leadrrg.metrics.ratescore import python_reason, ratescore


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(METRICS_DIR_ENV, raising=False)


def test_directory_precedence_flag_env_recorded(tmp_path, monkeypatch):
    assert metrics_dir() == (None, "not set")
    recorded, env, flag = (tmp_path / name for name in ("recorded", "env", "flag"))
    for folder in (recorded, env, flag):
        folder.mkdir()
    written = local_models.record_metrics_dir(recorded)
    assert written == tmp_path / "config" / "leadrrg" / "metrics.json"
    assert metrics_dir()[0] == recorded
    monkeypatch.setenv(METRICS_DIR_ENV, str(env))
    assert metrics_dir()[0] == env
    assert metrics_dir(flag)[0] == flag
    with pytest.raises(LeadrrgError, match="does not exist"):
        local_models.record_metrics_dir(tmp_path / "absent")
    written.write_text("{not json")
    monkeypatch.delenv(METRICS_DIR_ENV)
    with pytest.raises(LeadrrgError, match="metrics.json: expected"):
        metrics_dir()


def test_missing_weights_say_what_to_put_where(tmp_path):
    no_dir = folder_reason(None, "bertscore")
    assert "leadrrg metrics setup DIR" in no_dir and "DIR/bertscore/distilroberta-base/" in no_dir
    assert "distilbert/distilroberta-base" in no_dir and "vocab.json" in no_dir
    folder = tmp_path / "bertscore" / "distilroberta-base"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    reason = folder_reason(tmp_path, "bertscore")
    assert reason.startswith(
        f"{folder}/ lacks vocab.json, merges.txt, model.safetensors or pytorch_model.bin"
    )
    with pytest.raises(LeadrrgError, match="lacks vocab.json"):
        model_folder(tmp_path, "bertscore")
    radgraph = folder_reason(tmp_path, "radgraph")
    assert "radgraph/radgraph/ lacks config.json, weights.th, vocabulary/" in radgraph
    assert "StanfordAIMI/RRG_scorers" in radgraph


def test_metrics_setup_and_status_commands(tmp_path, capsys):
    assert cli.main(["metrics", "setup", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "recorded in" in out and "0 of 4 ready" in out
    for name in FIELD_METRICS:
        assert f"{name}" in out
    assert f"{tmp_path}/chexbert/ lacks chexbert.pth" in out
    assert cli.main(["metrics", "status", "--metrics-dir", str(tmp_path / "x")]) == 0
    assert "does not exist" in capsys.readouterr().out
    assert cli.main(["metrics", "setup", str(tmp_path / "absent")]) == 2


def annotation(*entities):
    """A RadGraph annotation from (tokens, label, relations) triples."""
    return {
        "entities": {
            str(i): {"tokens": t, "label": lab, "relations": rel} for i, (t, lab, rel) in enumerate(entities)
        }
    }


OP, AP = "Observation::definitely present", "Anatomy::definitely present"
HYP = annotation(("effusion", OP, [["located_at", "1"]]), ("left", AP, []), ("edema", OP, []))
REF = annotation(("effusion", OP, [["located_at", "1"]]), ("right", AP, []))


def test_partial_reward_golden_values():
    # hyp {(effusion, OP, True), (left, AP), (edema, OP)} vs ref {(effusion, OP, True), (right, AP)}:
    # P = 1/3, R = 1/2, F1 = 2 * (1/6) / (5/6) = 0.4
    assert partial_reward(HYP, REF) == pytest.approx(0.4)
    assert partial_reward(HYP, HYP) == 1.0
    # the relation flag counts: effusion without its relation does not match effusion with one
    assert partial_reward(annotation(("effusion", OP, [])), REF) == 0.0
    assert partial_reward(annotation(), REF) == 0.0
    rewards = pytest.importorskip("radgraph.rewards", reason="radgraph (metrics extra) not installed")
    for hyp, ref in ((HYP, REF), (REF, HYP), (HYP, HYP), (annotation(("effusion", OP, [])), REF)):
        assert partial_reward(hyp, ref) == rewards.compute_reward(hyp, ref, "partial")


def test_radgraph_partial_f1_with_a_stand_in_annotator():
    table = {"hyp one": HYP, "ref one": REF, "same": HYP}
    calls = []

    def annotate(reports):
        calls.append(list(reports))
        return [table[report] for report in reports]

    scores = radgraph_partial_f1(["ref one", "same", "ref three"], ["hyp one", "same", ""], annotate=annotate)
    assert scores["per_study"]["radgraph_partial_f1"].tolist() == pytest.approx([0.4, 1.0, 0.0])
    assert scores["radgraph_partial_f1"] == pytest.approx(1.4 / 3)
    assert calls == [["hyp one", "same", "ref one", "same"]]  # F1RadGraph's order; empty reports skipped


def test_ratescore_wrapper_and_python_requirement():
    scores = ratescore(["a", "b"], ["c", "d"], score=lambda candidates, references: [0.25, 0.75])
    assert scores["ratescore"] == 0.5 and scores["per_study"]["ratescore"].tolist() == [0.25, 0.75]
    reason = unavailable("ratescore", None)
    if sys.version_info < (3, 12):
        assert python_reason() is not None and "numpy < 2" in reason and "Python >= 3.12" in reason
    assert "ratescore/RaTE-NER-Deberta/" in reason and "ratescore/BioLORD-2023-C/" in reason


def write_roberta_dir(path, layers=2):
    """A tiny distilroberta-base look-alike: byte-level BPE with single characters, `layers` layers."""
    transformers = pytest.importorskip("transformers")
    path.mkdir(parents=True)
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz."))
    vocab = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "Ġ", *chars, *("Ġ" + c for c in chars)]
    (path / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.RobertaTokenizer(
        str(path / "vocab.json"), str(path / "merges.txt"), model_max_length=512
    )
    tokenizer.save_pretrained(path)
    config = transformers.RobertaConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )  # fmt: skip
    transformers.RobertaModel(config).save_pretrained(path)
    return path


def hand_bertscore(model_dir, reference, hypothesis, layer):
    """Greedy cosine matching of layer-`layer` token embeddings (Zhang et al., 2020), as bert-score weighs it."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir).eval()

    def embed(text):
        ids = tokenizer(text, add_special_tokens=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**ids, output_hidden_states=True).hidden_states[layer][0]
        return torch.nn.functional.normalize(hidden, dim=-1)

    # bert-score 0.3.13 (idf=False): each word token (weight 1; <s> and </s> weight 0) takes its best match
    # among all tokens of the other report, <s> and </s> included
    similarity = embed(hypothesis) @ embed(reference).T
    precision = similarity[1:-1].max(dim=1).values.mean().item()
    recall = similarity[:, 1:-1].max(dim=0).values.mean().item()
    return precision, recall, 2 * precision * recall / (precision + recall)


def test_bertscore_matches_a_hand_computation(tmp_path):
    bert_score = pytest.importorskip("bert_score", reason="bert-score (metrics extra) not installed")
    import pandas as pd

    from leadrrg.metrics.bertscore import BASELINE, bertscore

    model_dir = write_roberta_dir(tmp_path / "bertscore" / "distilroberta-base")
    references, hypotheses = (
        ["no focal consolidation.", "small left effusion."],
        ["no consolidation.", "edema."],
    )
    scores = bertscore(references, hypotheses, model_dir=model_dir, num_layers=2)
    from pathlib import Path

    baseline = pd.read_csv(Path(bert_score.__file__).parent / BASELINE).iloc[2].to_numpy()[1:].astype(float)
    for i, (ref, hyp) in enumerate(zip(references, hypotheses)):
        raw = hand_bertscore(model_dir, " " + ref, " " + hyp, layer=2)  # bert-score adds the prefix space
        rescaled = [(value - b) / (1 - b) for value, b in zip(raw, baseline)]
        got = [scores["per_study"][f"bertscore_{part}"][i] for part in ("precision", "recall", "f1")]
        assert got == pytest.approx(rescaled, abs=1e-4)
    assert scores["bertscore_f1"] == pytest.approx(scores["per_study"]["bertscore_f1"].mean())


RECORDS = [
    {"id": "a", "reference": "no focal consolidation.", "generated": "no consolidation."},
    {"id": "b", "reference": "small left effusion.", "generated": "edema."},
]


def write_preds(tmp_path):
    path = tmp_path / "preds.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in RECORDS))
    return path


def test_evaluate_reports_each_missing_metric_with_its_reason(tmp_path, capsys):
    preds, out = write_preds(tmp_path), tmp_path / "metrics.json"
    assert cli.main(["evaluate", "--preds", str(preds), "--out", str(out), "--no-meteor"]) == 0
    metrics = json.loads(out.read_text())
    for name in FIELD_METRICS:
        assert name not in metrics and "metrics setup DIR" in metrics["missing"][name], name
    assert metrics["meta"]["field_metrics"] is True
    assert "Metrics papers report" in capsys.readouterr().out
    assert (
        cli.main(["evaluate", "--preds", str(preds), "--out", str(out), "--no-meteor", "--no-model-metrics"])
        == 0
    )
    assert "bertscore_f1" not in json.loads(out.read_text())["missing"]


def test_evaluate_reads_chexbert_and_bertscore_from_the_metrics_folder(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from tests.test_chexbert import build_model, write_bert_dir, write_checkpoint

    torch.manual_seed(0)
    (tmp_path / "chexbert").mkdir()
    bert_dir, config = write_bert_dir(tmp_path / "chexbert" / "bert-base-uncased")
    write_checkpoint(tmp_path / "chexbert" / "chexbert.pth", build_model(config))
    has_bert_score = "import bert_score" not in (unavailable("bertscore_f1", None) or "")
    if has_bert_score:
        write_roberta_dir(tmp_path / "bertscore" / "distilroberta-base", layers=5)  # ReXrank reads layer 5
    monkeypatch.setenv(METRICS_DIR_ENV, str(tmp_path))
    preds, out = write_preds(tmp_path), tmp_path / "metrics.json"
    argv = ["evaluate", "--preds", str(preds), "--out", str(out), "--no-meteor", "--bootstrap", "20"]
    assert cli.main(argv) == 0
    metrics = json.loads(out.read_text())
    assert 0.0 <= metrics["chexbert14_micro_f1"] <= 1.0 and "chexbert14_micro_f1" not in metrics["missing"]
    assert metrics["meta"]["chexbert"]["bert_dir"] == str(bert_dir)
    if has_bert_score:
        assert -1.0 <= metrics["bertscore_f1"] <= 1.0 and len(metrics["bertscore_f1_ci"]) == 2
    else:
        assert "bert-score" in metrics["missing"]["bertscore_f1"]


def test_field_metrics_without_a_directory_computes_nothing():
    result = field_metrics(["a"], ["b"], root=None)
    assert result["scores"] == {} and result["statistics"] == []
    assert set(result["missing"]) == set(FIELD_METRICS[:3])
