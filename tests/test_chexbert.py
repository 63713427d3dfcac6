"""CheXbert labeler from local files: a random-weight stand-in in the published checkpoint's key layout
(``model_state_dict`` with ``module.bert.*`` and ``module.linear_heads.{0..13}``), the head -> label
mapping, the chexbert14_* metrics beside ours, and a clear error for every wrong file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from leadrrg import cli  # noqa: E402
from leadrrg.constants import OBSERVATIONS  # noqa: E402
from leadrrg.errors import LeadrrgError  # noqa: E402
from leadrrg.evaluation.evaluate import evaluate_predictions  # noqa: E402
from leadrrg.labeler.chexbert import CHEXBERT_ORDER, CheXbertLabeler, build_model  # noqa: E402
from tests.test_evaluate import RECORDS, keyword_labeler, write_jsonl  # noqa: E402

WORDS = [
    "the",
    "heart",
    "is",
    "normal",
    "lungs",
    "are",
    "clear",
    "no",
    "effusion",
    "small",
    "left",
    "pleural",
    "mild",
    "cardiomegaly",
    "edema",
    "and",
]


def write_bert_dir(path):
    """A tiny bert-base-uncased look-alike: config.json and vocab.txt."""
    path.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", *WORDS]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=512,
    )  # fmt: skip
    config.save_pretrained(path)
    return path, config


def write_checkpoint(path, model, *, prefix="module.", drop=None):
    state = {prefix + key: value for key, value in model.state_dict().items() if key != drop}
    torch.save({"epoch": 3, "model_state_dict": state, "optimizer_state_dict": {"state": {}}}, path)
    return path


@pytest.fixture()
def chexbert_files(tmp_path):
    torch.manual_seed(0)
    bert_dir, config = write_bert_dir(tmp_path / "bert-base-uncased")
    model = build_model(config)
    return write_checkpoint(tmp_path / "chexbert.pth", model), bert_dir, model


def test_random_stand_in_labels_in_label_reports_format(chexbert_files):
    checkpoint, bert_dir, _ = chexbert_files
    labeler = CheXbertLabeler(checkpoint, bert_dir)
    reports = ["The heart is normal. Lungs are clear.", "", "Small left pleural effusion and mild edema."]
    labels = labeler(reports)
    assert labels.shape == (3, 14) and labels.dtype == np.float32
    finite = labels[~np.isnan(labels)]
    assert set(finite.tolist()) <= {1.0, 0.0, -1.0}
    assert np.array_equal(labeler(reports), labels, equal_nan=True)  # eval mode: deterministic
    # batching and length sorting do not change a report's labels
    assert np.array_equal(labeler(reports[2:]), labels[2:], equal_nan=True)
    assert labeler.provenance["checkpoint"] == str(checkpoint) and len(labeler.provenance["sha256"]) == 64


def test_heads_map_to_observations_and_classes(tmp_path):
    """Head k is CheXbert's k-th observation (No Finding last); class 0 blank, 1 positive, 2 negative,
    3 uncertain. Zero weights and one-hot biases force each head's class."""
    bert_dir, config = write_bert_dir(tmp_path / "bert")
    model = build_model(config)
    forced = {"Cardiomegaly": 1, "Edema": 2, "Pneumonia": 3, "Pleural Effusion": 1, "No Finding": 1}
    with torch.no_grad():
        for k, head in enumerate(model.linear_heads):
            head.weight.zero_()
            head.bias.zero_()
            head.bias[forced.get(CHEXBERT_ORDER[k], 0)] = 5.0
    checkpoint = write_checkpoint(tmp_path / "forced.pth", model)
    row = CheXbertLabeler(checkpoint, bert_dir)(["the heart is normal"])[0]
    expected = {
        "Cardiomegaly": 1.0,
        "Edema": 0.0,
        "Pneumonia": -1.0,
        "Pleural Effusion": 1.0,
        "No Finding": 1.0,
    }
    for name, value in zip(OBSERVATIONS, row):
        if name in expected:
            assert value == expected[name], name
        else:
            assert math.isnan(value), name


def test_checkpoint_without_the_module_prefix_loads(tmp_path, chexbert_files):
    _, bert_dir, model = chexbert_files
    checkpoint = write_checkpoint(tmp_path / "plain.pth", model, prefix="")
    assert CheXbertLabeler(checkpoint, bert_dir)(["no effusion"]).shape == (1, 14)


def test_wrong_files_give_clear_errors(tmp_path, chexbert_files):
    checkpoint, bert_dir, model = chexbert_files
    with pytest.raises(LeadrrgError, match="nope.pth does not exist; expected the CheXbert checkpoint"):
        CheXbertLabeler(tmp_path / "nope.pth", bert_dir)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(LeadrrgError, match="garbage.pth: not a PyTorch checkpoint"):
        CheXbertLabeler(garbage, bert_dir)
    no_state = tmp_path / "no_state.pth"
    torch.save({"weights": {}}, no_state)
    with pytest.raises(LeadrrgError, match="expected a checkpoint dict with 'model_state_dict'"):
        CheXbertLabeler(no_state, bert_dir)
    headless = write_checkpoint(tmp_path / "headless.pth", model, drop="linear_heads.13.bias")
    with pytest.raises(
        LeadrrgError, match=r"not a CheXbert checkpoint .*1 keys missing.*linear_heads\.13\.bias"
    ):
        CheXbertLabeler(headless, bert_dir)
    with pytest.raises(LeadrrgError, match="expected a local bert-base-uncased directory"):
        CheXbertLabeler(checkpoint, tmp_path)
    # weights for another BERT size
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    (other_dir / "vocab.txt").write_text((bert_dir / "vocab.txt").read_text())
    config = transformers.BertConfig.from_pretrained(bert_dir)
    config.intermediate_size = 40
    config.save_pretrained(other_dir)
    with pytest.raises(LeadrrgError, match="weights do not fit the BERT"):
        CheXbertLabeler(checkpoint, other_dir)


def test_pickled_code_is_refused(tmp_path, chexbert_files):
    _, bert_dir, _ = chexbert_files
    evil = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {"x": np.float64}}, evil)  # a class reference: needs a full unpickler
    with pytest.raises(LeadrrgError, match="not a PyTorch checkpoint of tensors"):
        CheXbertLabeler(evil, bert_dir)


def test_chexbert_metrics_beside_ours(chexbert_files):
    checkpoint, bert_dir, _ = chexbert_files
    labeler = CheXbertLabeler(checkpoint, bert_dir)
    plain = evaluate_predictions(RECORDS, meteor=False, label_fn=keyword_labeler)
    metrics = evaluate_predictions(
        RECORDS, meteor=False, label_fn=keyword_labeler, chexbert_fn=labeler, bootstrap=20
    )
    assert metrics["ce14_micro_f1"] == plain["ce14_micro_f1"]  # ours unchanged
    for name in ("chexbert14_micro_f1", "chexbert5_macro_f1", "chexbert14_example_precision"):
        assert 0.0 <= metrics[name] <= 1.0 and len(metrics[f"{name}_ci"]) == 2
    assert set(metrics["chexbert_per_observation"]) == set(OBSERVATIONS)
    assert metrics["meta"]["chexbert"]["checkpoint"] == str(checkpoint)
    assert not any(name.startswith("chexbert") for name in plain)


def test_cli_evaluate_with_chexbert(tmp_path, monkeypatch, chexbert_files, capsys):
    import leadrrg.labeler

    checkpoint, bert_dir, _ = chexbert_files
    monkeypatch.setattr(leadrrg.labeler, "label_reports", keyword_labeler)
    preds = write_jsonl(tmp_path / "preds.jsonl", [json.dumps(r) for r in RECORDS])
    out = tmp_path / "metrics.json"
    argv = ["evaluate", "--preds", str(preds), "--out", str(out), "--no-meteor"]
    assert cli.main([*argv, "--chexbert", str(checkpoint), "--bert-dir", str(bert_dir)]) == 0
    assert "chexbert14_micro_f1" in json.loads(out.read_text())
    assert "CheXbert" in capsys.readouterr().out
    assert cli.main([*argv, "--chexbert", str(checkpoint)]) == 2
    assert "--chexbert needs --bert-dir" in capsys.readouterr().err


def test_cli_compare_with_chexbert(tmp_path, monkeypatch, chexbert_files, capsys):
    import leadrrg.labeler

    checkpoint, bert_dir, _ = chexbert_files
    monkeypatch.setattr(leadrrg.labeler, "label_reports", keyword_labeler)
    worse = [{**r, "generated": ""} for r in RECORDS]
    a = write_jsonl(tmp_path / "a.jsonl", [json.dumps(r) for r in worse])
    b = write_jsonl(tmp_path / "b.jsonl", [json.dumps(r) for r in RECORDS])
    out = tmp_path / "c.json"
    argv = ["compare", str(a), str(b), "--bootstrap", "20", "--out", str(out)]
    assert cli.main([*argv, "--chexbert", str(checkpoint), "--bert-dir", str(bert_dir)]) == 0
    result = json.loads(out.read_text())
    assert {"chexbert14_micro_f1", "ce14_micro_f1"} <= set(result)
    assert result["chexbert14_micro_f1"]["b"] == pytest.approx(
        evaluate_predictions(
            RECORDS, meteor=False, label_fn=keyword_labeler, chexbert_fn=CheXbertLabeler(checkpoint, bert_dir)
        )["chexbert14_micro_f1"]
    )
    assert cli.main(argv) == 0 and not any(k.startswith("chexbert") for k in json.loads(out.read_text()))
