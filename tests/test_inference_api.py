"""The Python API on a tiny run: `leadrrg.load(...).generate / generate_batch`, the kinds of image it takes, the
compact evidence, and that every path (API, generate_split) decodes the same."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import leadrrg
from leadrrg.constants import OBSERVATIONS
from leadrrg.data.dataset import StudyDataset
from leadrrg.data.manifests import Study
from leadrrg.errors import LeadrrgError
from leadrrg.inference.evidence import compact_evidence, expert_weights, token_pieces
from leadrrg.inference.inputs import to_gray, view_tensor
from leadrrg.inference.predict import generate_split
from leadrrg.inference.steps import CachedDecoder, prompt_inputs
from tests.fixtures_data import make_jsonl, write_png
from tests.test_generate_cli import write_tiny_run
from tests.test_model_helpers import EXPERTS


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    data = make_jsonl(tmp_path_factory.mktemp("data"), counts={"train": 2, "test": 3}, views=2)
    return write_tiny_run(tmp_path_factory.mktemp("run"), data, max_new_tokens=6)


@pytest.fixture(scope="module")
def generator(run_dir):
    return leadrrg.load(run_dir, device="cpu")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return [write_png(root / f"{i}.png", seed=i) for i in range(3)]


def test_readme_example(run_dir, images):
    generator = leadrrg.load(run_dir)  # device="auto"
    result = generator.generate(str(images[0]), evidence=True)
    assert isinstance(result.report, str) and result.report
    assert list(result.expert_probs) == EXPERTS and all(0 <= p <= 1 for p in result.expert_probs.values())
    assert list(result.findings) == list(OBSERVATIONS)
    assert set(result.findings.values()) <= {1, 0, -1, None}
    assert result.images == [str(images[0])]
    assert result.evidence["format"] == "leadrrg.evidence/1" and result.evidence["layers"] == 2


def test_paths_pil_arrays_and_tensors_give_the_same_report(generator, images):
    path = images[0]
    gray = np.array(Image.open(path))  # uint8 (H, W)
    kinds = [str(path), path, Image.open(path), gray, gray.astype(np.float32) / 255, torch.from_numpy(gray)]
    reports = [generator.generate(kind).report for kind in kinds]
    assert len(set(reports)) == 1
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    assert generator.generate(rgb).report == reports[0]


def test_view_preparation_matches_the_evaluation_dataset(generator, images):
    config = generator.config
    item = StudyDataset([Study("s", "", [str(images[1])], "")], config.model.vision, 2, train=False)[0]
    assert torch.equal(view_tensor(to_gray(images[1]), config.model.vision), item["images"][0])


def test_batch_equals_one_by_one_and_generate_split(generator, images, run_dir):
    studies = [[images[0]], [images[1], images[2]], images[2]]
    batch = generator.generate_batch(studies, batch_size=2)
    single = [generator.generate(study) for study in studies]
    assert [r.report for r in batch] == [r.report for r in single]
    for one, alone in zip(batch, single):
        assert one.expert_probs == pytest.approx(alone.expert_probs, abs=1e-5)
    records = generate_split(
        generator,
        [
            Study(str(i), "", [str(p) for p in (s if isinstance(s, list) else [s])], "")
            for i, s in enumerate(studies)
        ],
        generator.config.decode,
    )
    assert [r["generated"] for r in records] == [r.report for r in batch]


def test_decode_overrides_and_their_errors(generator, images):
    beam = generator.generate(images[0], strategy="beam", num_beams=2, evidence=True)
    assert len(beam.evidence["tokens"]) <= 6
    with pytest.raises(LeadrrgError, match="unknown decode setting"):
        generator.generate(images[0], beams=2)
    with pytest.raises(LeadrrgError, match="num_beams"):
        generator.generate(images[0], num_beams=0)
    with pytest.raises(LeadrrgError, match="at most 2 view"):
        generator.generate([images[0]] * 3)
    with pytest.raises(LeadrrgError, match="cannot be read"):
        generator.generate(object())
    with pytest.raises(LeadrrgError, match=r"expected \[0, 1\]"):
        generator.generate(np.full((8, 8), 3.0, dtype=np.float32))
    with pytest.raises(LeadrrgError, match="does not exist"):
        leadrrg.load(images[0].parent / "nope")


def _first_logits(generator, image) -> torch.Tensor:
    """The next-token logits after the prompt, as the decoding loops get them."""
    views, view_mask = generator.prepare(image)
    model = generator.model
    with torch.inference_mode():
        context = model.encode_study(views[None], view_mask[None])
        embeds, prompt_mask = prompt_inputs(model, generator.tokenizer, context)
        with model.injecting(context):
            return CachedDecoder(model, prompt_mask, max_new_tokens=1).prefill(embeds)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_decoding_casts_the_language_model_only(run_dir, generator, images, dtype):
    half = leadrrg.load(run_dir, device="cpu", overrides=[f"decode.dtype={dtype}"])
    assert {p.dtype for p in half.model.lm.parameters()} == {getattr(torch, dtype)}
    rest = [p for name, p in half.model.named_parameters() if not name.startswith("lm.")]
    assert rest and all(p.dtype == torch.float32 for p in rest)  # vision encoder, experts, projections
    full_logits, half_logits = _first_logits(generator, images[0]), _first_logits(half, images[0])
    assert half_logits.dtype == torch.float32
    assert not torch.equal(half_logits, full_logits)  # the decoder did run in half precision
    torch.testing.assert_close(half_logits, full_logits, atol=0.05 * full_logits.abs().max().item(), rtol=0)
    result = half.generate(images[0])
    assert result.report and result.expert_probs == generator.generate(images[0]).expert_probs
    with pytest.raises(LeadrrgError, match="cast when the run was loaded"):
        half.generate(images[0], dtype="float32")
    with pytest.raises(LeadrrgError, match=r"decode\.dtype"):
        leadrrg.load(run_dir, device="cpu", overrides=["decode.dtype=int8"])


def test_expert_probability_override_reaches_the_result(generator, images):
    forced = {name: 1.0 if name == "Edema" else 0.0 for name in EXPERTS}
    result = generator.generate(images[0], expert_probs=forced)
    assert result.expert_probs == pytest.approx(forced)
    # a partial what-if keeps the model's own p for the other experts; a misspelt name is refused
    partial = generator.generate(images[0], expert_probs={"Edema": 1.0})
    own = generator.generate(images[0]).expert_probs
    assert partial.expert_probs == pytest.approx({**own, "Edema": 1.0})
    with pytest.raises(LeadrrgError, match="unknown expert"):
        generator.generate(images[0], expert_probs={"Effusion": 1.0})


def test_full_evidence_and_the_compact_numbers(generator, images):
    result = generator.generate(images[0], evidence="full")
    evidence = result.evidence
    gates = torch.tensor(evidence["full"]["gates"])  # (T, L)
    alpha = torch.tensor(evidence["full"]["alpha"])  # (T, L, K)
    assert gates.shape == (len(evidence["tokens"]), 2) and alpha.shape[-1] == len(EXPERTS)
    weights = expert_weights(gates, alpha)  # (T, K)
    for t, token in enumerate(evidence["tokens"]):
        assert token["gates"] == pytest.approx(gates[t].tolist(), abs=1e-3)
        name, weight = token["experts"][0]
        # from the rounded tensors: the listed expert holds the largest share, up to rounding
        assert weight == pytest.approx(float(weights[t, EXPERTS.index(name)]), abs=3e-3)
        assert weight == pytest.approx(float(weights[t].max()), abs=3e-3)
    assert (
        evidence["layers"] == 2 and generator.generate(images[0], evidence=True).evidence.get("full") is None
    )


def test_expert_weights_are_gate_weighted_shares():
    gates = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # token 0: only layer 0 injects; token 1: nothing
    alpha = torch.tensor([[[0.9, 0.1], [0.1, 0.9]], [[0.5, 0.5], [1.0, 0.0]]])
    weights = expert_weights(gates, alpha)
    assert torch.allclose(weights, torch.tensor([[0.9, 0.1], [0.75, 0.25]]))
    evidence = compact_evidence(["a", " b"], gates, alpha, ["X", "Y"])
    assert evidence["tokens"][0] == {
        "text": "a",
        "display": "A",  # the piece in display form (leadrrg.inference.display)
        "gate": 0.5,
        "gates": [1.0, 0.0],
        "experts": [["X", 0.9], ["Y", 0.1]],
    }
    assert compact_evidence(["a"], None, None, [])["tokens"] == [{"text": "a", "display": "A."}]


def test_token_pieces_join_to_the_report(generator):
    tokenizer = generator.tokenizer
    text = "the heart size is normal. no pleural effusion."
    ids = tokenizer.encode(text)
    pieces = token_pieces(tokenizer, ids)
    assert len(pieces) == len(ids) and "".join(pieces) == tokenizer.decode(ids)


def test_an_unavailable_device_is_one_clear_error(run_dir):
    from leadrrg.inference.api import resolve_device

    assert resolve_device("cpu").type == "cpu" and resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(LeadrrgError, match="not a device"):
        resolve_device("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(LeadrrgError, match="CUDA is not available"):
            leadrrg.load(run_dir, device="cuda")


def test_loading_a_run_for_inference_does_not_import_the_training_code(run_dir):
    code = (
        "import sys, leadrrg; leadrrg.load(sys.argv[1], device='cpu'); "
        "print(sorted(m for m in sys.modules if m.startswith('leadrrg.train')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
