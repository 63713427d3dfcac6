"""Decoding speed: tokens/s of `generate_reports` with LEAD (fusion layerwise) and without experts (fusion none),
and of Hugging Face `generate()` on the same base decoder with the same prompt embeddings.

    .venv/bin/python benchmarks/bench_decode.py [--run RUN] [--batch-sizes 1 16] [--new-tokens 64] [--repeats 5]
                                                [--threads 1] [--device cpu] [--set model.decoder.hidden_size=512]
                                                [--cache static] [--compile] [--bandwidth-mb 1024]
                                                [--dtype bfloat16]

With batch 1 it also prints, from the same run, the measured memory read bandwidth (the median time to sum a
large float32 tensor), the bound it puts on batch-1 decoding (bandwidth / decoder weight bytes read per token)
and the share of that bound our LEAD decoding reaches; then how fast `F.linear` alone reads the same weights at
batch 1 (the BLAS kernel's ceiling: on a CPU whose matrix-vector product reads well below the bandwidth, that
ceiling, not Python overhead, is what limits the share). `--dtype bfloat16` / `float16` decodes with the language
model in that precision (`decode.dtype`, as `leadrrg generate --set decode.dtype=...` loads a run): half the bytes
per token, so the bound doubles; the share of the float32 bound is printed beside it.

Models: the `demo` preset's model (random init, the zero-initialised projections W^l given small random values
so that injection is active), or the run given with --run (its `none` twin then has the same architecture, random
weights: speed does not depend on the values). Every configuration decodes greedily exactly --new-tokens tokens
(EOS banned before that: `decode.min_new_tokens`, `min_new_tokens` for HF), so token counts match. Each timing
covers the whole call, encode_study included (HF rows encode the study and build the prompt embeddings inside
the timed region too). Repeats are interleaved across configurations; the median is reported.

Rows: ours layerwise | ours none | HF generate() none (like for like with `ours none`) | HF generate() layerwise
(HF's loop inside LEAD's injection scope). Ratios: LEAD / none (target: under 10% overhead) and ours / HF.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def build_models(run: str | None, device: torch.device, overrides: list[str] = ()):
    """(layerwise model, none model, tokenizer), both in eval mode on `device`; `overrides` change the demo
    preset's config (e.g. model.decoder.hidden_size=512)."""
    import dataclasses

    import numpy as np

    from leadrrg.config import InjectionConfig, apply_overrides, load_preset
    from leadrrg.data.synth.generate import sample_findings
    from leadrrg.data.synth.reports import write_report
    from leadrrg.data.tokenizer import ReportTokenizer
    from leadrrg.model.lead import LeadModel

    if run:
        from leadrrg.runs.files import load_run

        lead, tokenizer, config = load_run(run, device=device)
        model_config = config.model
    else:
        config = apply_overrides(load_preset("demo"), list(overrides))
        model_config = config.model
        rng = np.random.default_rng(0)
        reports = [write_report(sample_findings(rng), rng) for _ in range(400)]
        tokenizer = ReportTokenizer.train(reports, config.model.decoder.vocab_size)
        torch.manual_seed(0)
        lead = LeadModel(model_config, tokenizer.vocab_size, tokenizer.pad_id)
        with torch.no_grad():  # W^l starts at zero: give it small values so that injection does work
            lead.expert_projections.up.normal_(std=0.02)
    if model_config.injection.fusion != "layerwise":
        raise SystemExit("--run must be a fusion=layerwise run")
    none_config = dataclasses.replace(
        model_config, injection=dataclasses.replace(model_config.injection, fusion="none")
    )
    assert isinstance(none_config.injection, InjectionConfig)
    torch.manual_seed(0)
    none = LeadModel(none_config, tokenizer.vocab_size, tokenizer.pad_id)
    return lead.to(device).eval(), none.to(device).eval(), tokenizer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def read_bandwidth(device: torch.device, megabytes: int = 1024, repeats: int = 5) -> float:
    """Memory read bandwidth in bytes/s: the median time to sum a `megabytes` float32 tensor (noisy on a shared
    machine: measured once per run, beside the decoding it bounds)."""
    values = torch.ones(megabytes * 2**20 // 4, dtype=torch.float32, device=device)
    values.sum()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        values.sum()
        sync(device)
        times.append(time.perf_counter() - start)
    return values.numel() * values.element_size() / statistics.median(times)


def linear_read_rate(model, device: torch.device, repeats: int = 5) -> float:
    """Bytes/s at which `F.linear` alone reads the language model's linear weights at batch 1 (every nn.Linear
    of the LM once, each on a fresh (1, in) input of its dtype; nothing else): the ceiling the BLAS kernel puts
    on batch-1 decoding, below the memory bound when its matrix-vector product does not reach the bandwidth."""
    import torch.nn.functional as F

    linears = [m for m in model.lm.modules() if isinstance(m, torch.nn.Linear)]
    inputs = {
        (m.in_features, m.weight.dtype): torch.randn(1, m.in_features, device=device, dtype=m.weight.dtype)
        for m in linears
    }
    total = sum(m.weight.numel() * m.weight.element_size() for m in linears)

    def run() -> None:
        with torch.inference_mode():
            for m in linears:
                F.linear(inputs[(m.in_features, m.weight.dtype)], m.weight)

    run()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        run()
        sync(device)
        times.append(time.perf_counter() - start)
    return total / statistics.median(times)


def weight_bytes_per_token(model) -> int:
    """Bytes of decoder weights read per decoding step at batch 1: every LM parameter once (tied ones once),
    except the input embedding table when it is not the output head (one row of it is read)."""
    lm = model.lm
    embedding, head = lm.get_input_embeddings().weight, lm.get_output_embeddings().weight
    seen, total = set(), 0
    for parameter in lm.parameters():
        if parameter.data_ptr() in seen or (
            parameter is embedding and embedding.data_ptr() != head.data_ptr()
        ):
            continue
        seen.add(parameter.data_ptr())
        total += parameter.numel() * parameter.element_size()
    return total


def ours(
    model, tokenizer, images, view_mask, new_tokens: int, cache: str = "dynamic", compile: bool = False
) -> int:
    from leadrrg.config import DecodeConfig
    from leadrrg.inference.decoding import generate_reports

    decode = DecodeConfig(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        batch_size=images.shape[0],
        cache=cache,
        compile=compile,
    )
    reports = generate_reports(model, tokenizer, images, view_mask, decode)
    return sum(len(report.token_ids) for report in reports)


@torch.inference_mode()
def hf(model, tokenizer, images, view_mask, new_tokens: int) -> int:
    from leadrrg.config import DecodeConfig
    from leadrrg.inference.steps import decoding_context, prompt_inputs

    context = decoding_context(model, images, view_mask, DecodeConfig())  # as ours decodes
    inputs_embeds, mask = prompt_inputs(model, tokenizer, context)
    with model.injecting(context):  # a no-op scope for fusion=none
        out = model.lm.generate(
            inputs_embeds=inputs_embeds,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=tokenizer.eos_id,
            pad_token_id=tokenizer.pad_id,
            use_cache=True,
        )
    return out.shape[0] * out.shape[1]


def check_same_tokens(model, tokenizer, images, view_mask, new_tokens: int) -> bool:
    """Our greedy tokens equal HF generate()'s on the same model and prompt."""
    from leadrrg.config import DecodeConfig
    from leadrrg.inference.decoding import generate_reports
    from leadrrg.inference.steps import decoding_context, prompt_inputs

    decode = DecodeConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    ours_ids = [r.token_ids for r in generate_reports(model, tokenizer, images, view_mask, decode)]
    with torch.inference_mode():
        context = decoding_context(model, images, view_mask, decode)  # as ours decodes
        inputs_embeds, mask = prompt_inputs(model, tokenizer, context)
        with model.injecting(context):
            hf_ids = model.lm.generate(
                inputs_embeds=inputs_embeds,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_id,
                pad_token_id=tokenizer.pad_id,
            ).tolist()
    return ours_ids == hf_ids


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", help="a trained fusion=layerwise run (default: the demo model, random init)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--cache", choices=("dynamic", "static"), default="dynamic", help="our decoder's KV cache"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile our one-token step")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="the language model's weights and compute (decode.dtype)",
    )
    parser.add_argument(
        "--bandwidth-mb", type=int, default=1024, help="tensor summed to measure read bandwidth"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="override of the demo config (no --run)"
    )
    args = parser.parse_args()
    return args


def print_rates(results: dict[tuple[str, int], float], names: list[str], batch_sizes: list[int]) -> None:
    """Tokens per second of every row at every batch size, then the ratios that matter."""
    print(f"{'':26s}" + "".join(f"{f'batch {b} tok/s':>16s}" for b in batch_sizes))
    for name in names:
        print(f"{name:26s}" + "".join(f"{results[(name, b)]:16.1f}" for b in batch_sizes))
    ratios = {
        "LEAD / none (ours), time": lambda b: results[("ours none", b)] / results[("ours layerwise", b)],
        "ours / HF, none, speed": lambda b: results[("ours none", b)] / results[("HF generate() none", b)],
        "ours / HF, layerwise, speed": lambda b: (
            results[("ours layerwise", b)] / results[("HF generate() layerwise", b)]
        ),
    }
    for name, ratio in ratios.items():
        print(f"{name:26s}" + "".join(f"{ratio(b):16.3f}" for b in batch_sizes))


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    lead, none, tokenizer = build_models(args.run, device, args.overrides)
    float32_weights = weight_bytes_per_token(lead)
    for model in (lead, none):
        model.lm.to(getattr(torch, args.dtype))
    config = lead.config
    print(
        f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}; decoder "
        f"{config.decoder.backbone} {config.decoder.num_layers}x{config.decoder.hidden_size}, "
        f"{config.experts.num_experts} experts, vocab {tokenizer.vocab_size}, {args.dtype}; "
        f"{args.new_tokens} new tokens, "
        f"median of {args.repeats}"
    )
    rows = {
        "ours layerwise": lambda *a: ours(lead, tokenizer, *a, args.cache, args.compile),
        "ours none": lambda *a: ours(none, tokenizer, *a, args.cache, args.compile),
        "HF generate() none": lambda *a: hf(none, tokenizer, *a),
        "HF generate() layerwise": lambda *a: hf(lead, tokenizer, *a),
    }
    results: dict[tuple[str, int], float] = {}
    for batch in args.batch_sizes:
        generator = torch.Generator().manual_seed(batch)
        size, views = config.vision.image_size, config.max_views
        images = torch.randn(batch, views, config.vision.channels, size, size, generator=generator).to(device)
        view_mask = torch.ones(batch, views, dtype=torch.bool, device=device)
        same = check_same_tokens(none, tokenizer, images, view_mask, args.new_tokens)
        same_lead = check_same_tokens(lead, tokenizer, images, view_mask, args.new_tokens)
        print(f"batch {batch}: our greedy tokens equal HF generate()'s: none {same}, layerwise {same_lead}")
        times: dict[str, list[float]] = {name: [] for name in rows}
        for fn in rows.values():  # warm up
            fn(images, view_mask, args.new_tokens)
        for _ in range(args.repeats):
            for name, fn in rows.items():
                sync(device)
                start = time.perf_counter()
                tokens = fn(images, view_mask, args.new_tokens)
                sync(device)
                times[name].append(time.perf_counter() - start)
                assert tokens == batch * args.new_tokens, (name, tokens)
        for name in rows:
            results[(name, batch)] = batch * args.new_tokens / statistics.median(times[name])

    print_rates(results, list(rows), args.batch_sizes)
    if 1 in args.batch_sizes:  # batch 1 is bound by reading the weights once per token
        bandwidth = read_bandwidth(device, args.bandwidth_mb)
        weights = weight_bytes_per_token(lead)
        bound = bandwidth / weights
        reached = results[("ours layerwise", 1)]
        print(
            f"read bandwidth {bandwidth / 1e9:.1f} GB/s (sum of a {args.bandwidth_mb} MiB float32 tensor); "
            f"decoder weights read per token {weights / 1e6:.0f} MB; bound {bound:.1f} tokens/s at batch 1; "
            f"ours layerwise {reached:.1f} tokens/s = {100 * reached / bound:.0f}% of it"
        )
        kernel = linear_read_rate(lead, device)
        print(
            f"F.linear alone reads these weights at {kernel / 1e9:.1f} GB/s at batch 1 "
            f"({100 * kernel / bandwidth:.0f}% of the read bandwidth): a ceiling of {kernel / weights:.1f} "
            f"tokens/s before any other op"
        )
        if weights != float32_weights:
            float32_bound = bandwidth / float32_weights
            print(
                f"against the float32 weights ({float32_weights / 1e6:.0f} MB, bound {float32_bound:.1f} "
                f"tokens/s): {100 * reached / float32_bound:.0f}%"
            )


if __name__ == "__main__":
    main()
