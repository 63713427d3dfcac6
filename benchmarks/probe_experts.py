"""How well the vision encoder and the experts alone read SynthCXR images: expert AUROC on test / shift_test.

Trains only `MultiViewEncoder` + `ExpertModule` (BCE on the 14 labels, no language model) from the preset's
model config, with the training pipeline's augmentation and a cosine schedule, and prints macro AUROC on
`test` and `shift_test` four times during training, then per-finding AUROC. It isolates what the experts can
learn from the pixels at a budget from what the report loss adds; it is how `experts.readout` was chosen
(docs/RESULTS.md).

    .venv/bin/python benchmarks/probe_experts.py --data DIR [--preset demo] [--steps 400] [--seed 0]
        [--set model.experts.readout=query ...]

DIR is a SynthCXR set (`leadrrg synth`; one view per study). Images are decoded once and kept in memory.
`--eval-data SEL` scores on SEL's `val` and `shift_test` instead of DIR's `test` and `shift_test`: a selection
set drawn with another seed (`leadrrg synth --out SEL --seed 7 --train 0 --test 0 --shift-test 300`), so that
choices made with the probe are not tuned on the evaluation splits.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from leadrrg.config import apply_overrides, load_preset
from leadrrg.constants import OBSERVATIONS
from leadrrg.data.dataset import augment, letterbox
from leadrrg.data.images import load_image
from leadrrg.metrics.experts import binary_auroc
from leadrrg.model.experts import ExpertModule
from leadrrg.model.vision import MultiViewEncoder

SPLITS = ("train", "test", "shift_test")
SELECTION_SPLITS = ("val", "shift_test")


def load_split(root: str, manifest: list[dict], split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, S, S) in [0, 1], positives (N, 14) float) of one split."""
    rows = [r for r in manifest if r["split"] == split]
    images = torch.stack(
        [letterbox(torch.from_numpy(load_image(f"{root}/{r['images'][0]}")), size) for r in rows]
    )
    return images, (torch.tensor([r["labels"] for r in rows], dtype=torch.float32) == 1).float()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="SynthCXR data root")
    parser.add_argument("--eval-data", metavar="SEL", help="score on this SynthCXR set's val and shift_test")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-augment", action="store_true", help="train on the images as stored")
    parser.add_argument(
        "--pos-weight",
        type=float,
        default=0.0,
        metavar="CLIP",
        help="weigh each finding's positives by (negatives / positives) ** 0.5, clipped to CLIP (0: off)",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    return args


def main() -> None:
    args = parse_args()
    config = apply_overrides(load_preset(args.preset), args.overrides)
    vision, train = config.model.vision, config.train
    torch.manual_seed(args.seed)

    with open(f"{args.data}/manifest.jsonl", encoding="utf-8") as handle:
        manifest = [json.loads(line) for line in handle if line.strip()]
    data = {"train": load_split(args.data, manifest, "train", vision.image_size)}
    if args.eval_data:
        with open(f"{args.eval_data}/manifest.jsonl", encoding="utf-8") as handle:
            selection = [json.loads(line) for line in handle if line.strip()]
        data |= {s: load_split(args.eval_data, selection, s, vision.image_size) for s in SELECTION_SPLITS}
    else:
        data |= {s: load_split(args.data, manifest, s, vision.image_size) for s in SPLITS[1:]}
    scored = [s for s in data if s != "train"]
    encoder = MultiViewEncoder(vision, max_views=1)
    experts = ExpertModule(config.model.experts, encoder.hidden_size)
    params = [*encoder.parameters(), *experts.parameters()]
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)

    def lr_factor(step: int) -> float:
        cosine = 0.5 * (1 + math.cos(math.pi * min(step, args.steps) / args.steps))
        return min(1.0, (step + 1) / train.warmup_steps) * (
            train.min_lr_ratio + (1 - train.min_lr_ratio) * cosine
        )

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

    def logits_of(images: torch.Tensor) -> torch.Tensor:
        x = ((images - vision.mean) / vision.std)[:, None, None].expand(-1, 1, vision.channels, -1, -1)
        out = encoder(x, torch.ones(len(images), 1, dtype=torch.bool))
        return experts(out.tokens, out.token_mask)[1]  # (B, K)

    def evaluate() -> dict[str, dict[str, float | None]]:
        encoder.eval(), experts.eval()
        scores = {}
        with torch.no_grad():
            for split in scored:
                images, targets = data[split]
                logits = torch.cat([logits_of(images[i : i + 64]) for i in range(0, len(images), 64)]).numpy()
                scores[split] = {
                    name: binary_auroc(logits[:, k], targets[:, k].numpy())
                    for k, name in enumerate(OBSERVATIONS)
                }
        encoder.train(), experts.train()
        return scores

    images, targets = data["train"]
    positives = targets.sum(dim=0).clamp(min=1.0)
    pos_weight = (
        ((len(targets) - positives) / positives).sqrt().clamp(max=args.pos_weight)
        if args.pos_weight
        else None
    )
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        index = torch.randint(0, len(images), (train.batch_size,), generator=generator)
        batch = images[index] if args.no_augment else torch.stack([augment(x) for x in images[index]])
        loss = F.binary_cross_entropy_with_logits(logits_of(batch), targets[index], pos_weight=pos_weight)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, train.grad_clip)
        optimizer.step()
        schedule.step()
        if step % max(1, args.steps // 4) == 0 or step == args.steps:
            scores = evaluate()
            macro = {s: float(np.mean([v for v in a.values() if v is not None])) for s, a in scores.items()}
            print(
                f"step {step}: loss {loss.item():.3f}, expert macro AUROC "
                + ", ".join(f"{split} {value:.3f}" for split, value in macro.items())
                + f" ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    for split, aurocs in scores.items():
        print(split, " ".join(f"{n}={a:.2f}" for n, a in aurocs.items() if a is not None))


if __name__ == "__main__":
    main()
