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
(HF's loop inside LEAD's injection scope). Ratios: LEAD / none (target: at most 1.05; also in the process's CPU
time, steadier than wall time on a machine shared with other jobs) and ours / HF.
"""

from __future__ import annotations

import argparse
import os
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

    from leadrrg.inference.quantize import int8_weight_bytes, is_int8_linear

    linears = [m for m in model.lm.modules() if isinstance(m, torch.nn.Linear) or is_int8_linear(m)]
    dtype = next(p.dtype for p in model.lm.parameters() if p.is_floating_point())
    inputs = {m.in_features: torch.randn(1, m.in_features, device=device, dtype=dtype) for m in linears}
    total = sum(
        int8_weight_bytes(m) if is_int8_linear(m) else m.weight.numel() * m.weight.element_size()
        for m in linears
    )

    def run() -> None:  # int8 layers run their own kernel (quantise the input, int8 matmul)
        with torch.inference_mode():
            for m in linears:
                x = inputs[m.in_features]
                m(x) if is_int8_linear(m) else F.linear(x, m.weight)

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
    except the input embedding table when it is not the output head (one row of it is read), plus the int8
    weights and scales of layers `decode.quantize=int8` converted (they are not parameters)."""
    from leadrrg.inference.quantize import int8_weight_bytes, is_int8_linear

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
    return total + sum(int8_weight_bytes(m) for m in lm.modules() if is_int8_linear(m))


def cpu_features() -> str:
    """The CPU's model name, its bf16 / int8 matrix instructions (from /proc/cpuinfo) and torch's kernel level."""
    name, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and name == "unknown CPU":
                    name = value.strip()
                elif key.strip() in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
    have = [flag for flag in wanted if flag in flags]
    missing = [flag for flag in ("avx512_bf16", "amx_bf16") if flag not in flags]
    return (
        f"CPU {name}, {os.cpu_count()} logical cores; flags {' '.join(have) or 'none of ' + ' '.join(wanted)}"
        f"{'; no ' + ' / '.join(missing) if missing else ''}; torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, quantized engine {torch.backends.quantized.engine}"
    )


def for_dtype(model, dtype: str):
    """A copy of `model` with its language model as `decode.dtype` / `decode.quantize=int8` loads it."""
    import copy

    from leadrrg.inference.quantize import quantize_decoder

    model = copy.deepcopy(model)
    if dtype == "int8":
        return quantize_decoder(model, "int8")
    model.lm.to(getattr(torch, dtype))
    return model


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
        nargs="+",
        choices=("float32", "bfloat16", "float16", "int8"),
        default=["float32"],
        help="the language model's weights, one or more, timed in the same run (decode.dtype; int8: "
        "decode.quantize=int8 on float32)",
    )
    parser.add_argument(
        "--bandwidth-mb", type=int, default=1024, help="tensor summed to measure read bandwidth"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="override of the demo config (no --run)"
    )
    return parser.parse_args()


ROWS = ("ours layerwise", "ours none", "HF generate() none", "HF generate() layerwise")


def print_rates(
    results: dict[tuple[str, str, int], float], dtypes: list[str], batch_sizes: list[int]
) -> None:
    """Tokens per second of every row at every batch size, then the ratios that matter, per dtype."""
    ratios = {  # name -> (numerator row, denominator row, denominator dtype; None: the same)
        "LEAD / none (ours), time": ("ours none", "ours layerwise", None),
        "LEAD / none (ours), CPU": ("ours none, CPU", "ours layerwise, CPU", None),
        "ours / HF, none, speed": ("ours none", "HF generate() none", None),
        "ours / HF, layerwise": ("ours layerwise", "HF generate() layerwise", None),
        "ours layerwise / float32": ("ours layerwise", "ours layerwise", "float32"),
    }
    for dtype in dtypes:
        print(f"{dtype:26s}" + "".join(f"{f'batch {b} tok/s':>16s}" for b in batch_sizes))
        for name in ROWS:
            print(f"  {name:24s}" + "".join(f"{results[(dtype, name, b)]:16.1f}" for b in batch_sizes))
        for name, (top, bottom, other) in ratios.items():
            if other is not None and other not in dtypes:
                continue
            values = [results[(dtype, top, b)] / results[(other or dtype, bottom, b)] for b in batch_sizes]
            print(f"  {name:24s}" + "".join(f"{value:16.3f}" for value in values))


def print_bounds(results, models: dict, dtypes: list[str], args, device: torch.device) -> None:
    """Batch 1 is bound by reading the weights once per token: the bound of each dtype's bytes, the share our
    LEAD decoding reaches, the BLAS kernel's own read rate, and the share of the float32 bound."""
    bandwidth = read_bandwidth(device, args.bandwidth_mb)
    float32_bytes = args.float32_bytes
    print(f"read bandwidth {bandwidth / 1e9:.1f} GB/s (sum of a {args.bandwidth_mb} MiB float32 tensor)")
    for dtype in dtypes:
        lead = models[dtype][0]
        weights = weight_bytes_per_token(lead)
        bound, reached = bandwidth / weights, results[(dtype, "ours layerwise", 1)]
        kernel = linear_read_rate(lead, device)
        print(
            f"{dtype}: decoder weights read per token {weights / 1e6:.0f} MB; bound {bound:.1f} tokens/s at "
            f"batch 1; ours layerwise {reached:.1f} tokens/s = {100 * reached / bound:.0f}% of it. "
            f"{'int8 linear layers' if dtype == 'int8' else 'F.linear'} alone reads these weights at "
            f"{kernel / 1e9:.1f} GB/s at batch 1 "
            f"({100 * kernel / bandwidth:.0f}% of the read bandwidth): a ceiling of {kernel / weights:.1f} "
            "tokens/s before any other op"
        )
        if weights != float32_bytes:
            float32_bound = bandwidth / float32_bytes
            print(
                f"  against the float32 weights ({float32_bytes / 1e6:.0f} MB, bound {float32_bound:.1f} "
                f"tokens/s): {100 * reached / float32_bound:.0f}%"
            )


def time_batch(rows: dict, batch: int, args, device: torch.device) -> dict[tuple[str, str, int], float]:
    """Tokens/s of every (dtype, row) at one batch size, repeats interleaved; also per CPU second (`row, CPU`)."""
    images, view_mask = args.inputs(batch, torch.Generator().manual_seed(batch))
    times, cpu = {key: [] for key in rows}, {key: [] for key in rows}
    for fn in rows.values():  # warm up
        fn(images, view_mask, args.new_tokens)
    for _ in range(args.repeats):
        for key, fn in rows.items():
            sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            tokens = fn(images, view_mask, args.new_tokens)
            sync(device)
            times[key].append(time.perf_counter() - start)
            cpu[key].append(time.process_time() - start_cpu)
            assert tokens == batch * args.new_tokens, (key, tokens)
    n = batch * args.new_tokens
    rates = {(*key, batch): n / statistics.median(times[key]) for key in rows}
    return rates | {(d, f"{row}, CPU", batch): n / statistics.median(cpu[d, row]) for d, row in rows}


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtypes = list(dict.fromkeys(args.dtype))
    lead, none, tokenizer = build_models(args.run, device, args.overrides)
    args.float32_bytes = weight_bytes_per_token(lead)
    models = {dtype: (for_dtype(lead, dtype), for_dtype(none, dtype)) for dtype in dtypes}
    del lead, none
    config = models[dtypes[0]][0].config
    print(cpu_features())
    print(
        f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}; decoder "
        f"{config.decoder.backbone} {config.decoder.num_layers}x{config.decoder.hidden_size}, "
        f"{config.experts.num_experts} experts, vocab {tokenizer.vocab_size}, {' / '.join(dtypes)} (timed "
        f"interleaved in this run); {args.new_tokens} new tokens, median of {args.repeats}"
    )

    def inputs(batch: int, generator: torch.Generator):
        size, views = config.vision.image_size, config.max_views
        images = torch.randn(batch, views, config.vision.channels, size, size, generator=generator).to(device)
        return images, torch.ones(batch, views, dtype=torch.bool, device=device)

    args.inputs = inputs
    rows = {}
    for dtype, (lead, none) in models.items():
        rows[(dtype, ROWS[0])] = lambda *a, m=lead: ours(m, tokenizer, *a, args.cache, args.compile)
        rows[(dtype, ROWS[1])] = lambda *a, m=none: ours(m, tokenizer, *a, args.cache, args.compile)
        rows[(dtype, ROWS[2])] = lambda *a, m=none: hf(m, tokenizer, *a)
        rows[(dtype, ROWS[3])] = lambda *a, m=lead: hf(m, tokenizer, *a)
    results: dict[tuple[str, str, int], float] = {}
    for batch in args.batch_sizes:
        images, view_mask = inputs(batch, torch.Generator().manual_seed(batch))
        for dtype, (lead, none) in models.items():
            same = check_same_tokens(none, tokenizer, images, view_mask, args.new_tokens)
            same_lead = check_same_tokens(lead, tokenizer, images, view_mask, args.new_tokens)
            print(
                f"batch {batch}, {dtype}: our greedy tokens equal HF generate()'s: none {same}, "
                f"layerwise {same_lead}"
            )
        results.update(time_batch(rows, batch, args, device))
    print_rates(results, dtypes, args.batch_sizes)
    if 1 in args.batch_sizes:
        print_bounds(results, models, dtypes, args, device)


if __name__ == "__main__":
    main()
