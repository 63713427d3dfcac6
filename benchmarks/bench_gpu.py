"""GPU speed in one run, on a SmolLM2-135M-shaped decoder (30 x 576, 9 heads / 3 KV heads, FFN 1536, vocab
49152; random weights from the config, decoder weights in bf16): decode tokens/s at batch 1 and 16 for

    LEAD (fusion layerwise)  |  the plain model (fusion none)          with our decoder: dynamic cache, and
                                                                       static cache + torch.compile
    HF generate() on the plain model: dynamic cache, and static cache (cache_implementation="static") + compile

and training studies/s (batch 16, AdamW, bf16 autocast, fp32 master weights). Greedy, exactly --new-tokens
tokens per report (EOS banned before), median of --repeats after a warm-up (compilation is in the warm-up).

    .venv/bin/python benchmarks/bench_gpu.py [--new-tokens 64] [--repeats 3] [--train-steps 10]

Needs CUDA: without it, it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

SMOLLM2_135M = [
    "model.decoder.hidden_size=576",
    "model.decoder.num_layers=30",
    "model.decoder.num_heads=9",
    "model.decoder.num_kv_heads=3",
    "model.decoder.intermediate_size=1536",
    "model.decoder.max_positions=2048",
]
VOCAB = 49152


def build(fusion: str, device: torch.device, dtype: torch.dtype):
    """(model with its decoder in `dtype`, tokenizer, config) of the demo preset at the SmolLM2-135M shape."""
    import numpy as np

    from leadrrg.config import apply_overrides, load_preset
    from leadrrg.data.synth.generate import sample_findings
    from leadrrg.data.synth.reports import write_report
    from leadrrg.data.tokenizer import ReportTokenizer
    from leadrrg.model.lead import LeadModel

    config = apply_overrides(load_preset("demo"), [*SMOLLM2_135M, f"model.injection.fusion={fusion}"])
    rng = np.random.default_rng(0)
    tokenizer = ReportTokenizer.train([write_report(sample_findings(rng), rng) for _ in range(400)], 2000)
    torch.manual_seed(0)
    model = LeadModel(
        config.model, VOCAB, tokenizer.pad_id
    )  # the full vocabulary: its lm_head is read per token
    if fusion == "layerwise":
        with torch.no_grad():
            model.expert_projections.up.normal_(std=0.02)  # W^l starts at zero: make injection do work
    model.to(device)
    model.lm.to(dtype)
    return model.eval(), tokenizer, config


def timed(fn, repeats: int) -> float:
    """Median seconds of fn() after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ours(model, tokenizer, images, view_mask, new_tokens: int, cache: str, compile: bool) -> None:
    from leadrrg.config import DecodeConfig
    from leadrrg.inference.decoding import generate_reports

    decode = DecodeConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, cache=cache, compile=compile)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        generate_reports(model, tokenizer, images, view_mask, decode)


@torch.inference_mode()
def hf(model, tokenizer, images, view_mask, new_tokens: int, static: bool) -> None:
    from leadrrg.inference.decoding import prompt_inputs

    with torch.autocast("cuda", dtype=torch.bfloat16):
        context = model.encode_study(images, view_mask)
        inputs_embeds, mask = prompt_inputs(model, tokenizer, context)
        extra = (
            {"cache_implementation": "static"} if static else {}
        )  # HF compiles the static-cache step itself
        model.lm.generate(
            inputs_embeds=inputs_embeds.to(torch.bfloat16),
            attention_mask=mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_id,
            pad_token_id=tokenizer.pad_id,
            **extra,
        )


def train_studies_per_s(device: torch.device, steps: int, batch: int = 16, length: int = 96) -> float:
    from leadrrg.constants import OBSERVATIONS

    model, tokenizer, config = build("layerwise", device, torch.float32)  # fp32 master weights
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    size, views = config.model.vision.image_size, config.model.max_views
    images = torch.randn(batch, views, config.model.vision.channels, size, size, device=device)
    view_mask = torch.ones(batch, views, dtype=torch.bool, device=device)
    input_ids = torch.randint(4, tokenizer.vocab_size, (batch, length), device=device)
    targets = input_ids.clone()
    targets[:, :4] = -100
    labels = torch.randint(0, 2, (batch, len(OBSERVATIONS)), device=device).float()

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(images, view_mask, input_ids, torch.ones_like(input_ids), targets, labels)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--train-steps", type=int, default=10)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(
            "bench_gpu.py needs a CUDA GPU, and torch sees none on this machine; run it on a GPU host",
            file=sys.stderr,
        )
        return 2
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    lead, tokenizer, config = build("layerwise", device, torch.bfloat16)
    plain, _, _ = build("none", device, torch.bfloat16)
    print(
        f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}; SmolLM2-135M-shaped decoder "
        f"(30 x 576, vocab {VOCAB}) in bf16; {args.new_tokens} new tokens, median of {args.repeats}"
    )
    rows = {
        "LEAD, dynamic cache": lambda *a: ours(lead, tokenizer, *a, "dynamic", False),
        "LEAD, static + compile": lambda *a: ours(lead, tokenizer, *a, "static", True),
        "plain, dynamic cache": lambda *a: ours(plain, tokenizer, *a, "dynamic", False),
        "plain, static + compile": lambda *a: ours(plain, tokenizer, *a, "static", True),
        "HF generate(), dynamic": lambda *a: hf(plain, tokenizer, *a, False),
        "HF generate(), static": lambda *a: hf(plain, tokenizer, *a, True),
    }
    results: dict[tuple[str, int], float | None] = {}
    for batch in args.batch_sizes:
        size, views = config.model.vision.image_size, config.model.max_views
        images = torch.randn(batch, views, config.model.vision.channels, size, size, device=device)
        view_mask = torch.ones(batch, views, dtype=torch.bool, device=device)
        for name, fn in rows.items():
            try:
                seconds = timed(lambda fn=fn, i=images, m=view_mask: fn(i, m, args.new_tokens), args.repeats)
                results[(name, batch)] = batch * args.new_tokens / seconds
            except Exception as exc:  # one failing row (e.g. a compile error) does not hide the others
                print(
                    f"{name}, batch {batch}: failed ({type(exc).__name__}: {str(exc)[:200]})", file=sys.stderr
                )
                results[(name, batch)] = None
    print(f"{'decode tokens/s':26s}" + "".join(f"{f'batch {b}':>12s}" for b in args.batch_sizes))
    for name in rows:
        cells = [results[(name, b)] for b in args.batch_sizes]
        print(f"{name:26s}" + "".join(f"{'failed' if c is None else f'{c:.0f}':>12s}" for c in cells))
    for kind in ("dynamic cache", "static + compile"):
        lead_speed, plain_speed = results[(f"LEAD, {kind}", 1)], results[(f"plain, {kind}", 1)]
        if lead_speed and plain_speed:
            print(f"LEAD / plain time, {kind}, batch 1: {plain_speed / lead_speed:.3f}")
    print(
        f"training: {train_studies_per_s(device, args.train_steps):.1f} studies/s (batch 16, bf16 autocast)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
