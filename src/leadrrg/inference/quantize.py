"""`decode.quantize=int8`: the language model's linear layers stored as int8 when a run is loaded for decoding.

Batch-1 decoding reads every decoder weight once per token, so its speed is bound by the bytes of weights: int8
reads a quarter of float32's. The layers are converted with torch's own CPU int8 path,
`torch.ao.quantization.quantize_dynamic` (the fbgemm / x86 / qnnpack kernels of `torch.ao.nn.quantized.dynamic
.Linear`): the weights are quantised once, symmetric int8 with one scale per output channel; each call quantises
its input rows on the fly (uint8, one scale per call) and accumulates in int32. Only the decoder layers' own
linear layers are converted: the LM head and the embeddings, LEAD's gates (inside each `InjectedLayer`), LoRA
adapters, the experts, the projections and the vision encoder stay float32. CPU only: refused on CUDA.
torch 2.13 marks `torch.ao.quantization` and quantised tensors deprecated (moving to torchao); they still ship
and are silenced here. When they go, torchao's `Int8DynamicActivationInt8WeightConfig` is the same scheme.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from leadrrg.errors import LeadrrgError
from leadrrg.model.injection import ExpertGate

INT8_ENGINES = ("x86", "fbgemm", "qnnpack")  # torch's quantised CPU backends, preferred first


def quantizable_linears(lm: nn.Module) -> list[str]:
    """Names (in `lm`) of the nn.Linear layers int8 converts: every one in the language model except the
    output head, anything inside a LEAD gate and LoRA adapters."""
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    skip = {id(head)}
    for module in lm.modules():
        if isinstance(module, ExpertGate):
            skip.update(id(inner) for inner in module.modules())
    return [
        name
        for name, module in lm.named_modules()
        if isinstance(module, nn.Linear) and id(module) not in skip and "lora_" not in name
    ]


def int8_engine() -> str:
    """The quantised backend torch uses here: the current one if it packs int8 weights, else the first that
    this build supports; a LeadrrgError when it has none."""
    supported = torch.backends.quantized.supported_engines
    if torch.backends.quantized.engine in INT8_ENGINES:
        return torch.backends.quantized.engine
    for engine in INT8_ENGINES:
        if engine in supported:
            return engine
    raise LeadrrgError(
        f"decode.quantize=int8: this torch build has no int8 CPU backend (supported: {supported}); "
        "expected one of x86, fbgemm or qnnpack (or decode.quantize=none)"
    )


def quantize_decoder(model: nn.Module, mode: str) -> nn.Module:
    """Convert `model.lm`'s linear layers in place as `decode.quantize` says (none: unchanged) and return the
    model. The model must be on the CPU, in float32 and in eval mode (decoding only: the int8 layers do not
    train)."""
    if mode == "none":
        return model
    if mode != "int8":
        raise LeadrrgError(f"decode.quantize is {mode!r}; expected none or int8")
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise LeadrrgError(
            f"decode.quantize=int8 runs on the CPU only (torch's int8 linear kernels); the model is on {device}: "
            "expected --device cpu, or decode.dtype=bfloat16 on a GPU"
        )
    names = quantizable_linears(model.lm)
    if not names:
        raise LeadrrgError("decode.quantize=int8: the language model has no nn.Linear layers to convert")
    torch.backends.quantized.engine = int8_engine()
    spec = dict.fromkeys(names, torch.ao.quantization.per_channel_dynamic_qconfig)
    with (
        warnings.catch_warnings()
    ):  # torch.ao.quantization warns that it moves to torchao; it is still torch's
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.ao.quantization.quantize_dynamic(model.lm, qconfig_spec=spec, dtype=torch.qint8, inplace=True)
    return model


def is_int8_linear(module: nn.Module) -> bool:
    return isinstance(module, torch.ao.nn.quantized.dynamic.Linear)


def int8_weight_bytes(module: nn.Module) -> int:
    """Bytes one int8 linear layer reads per call: its int8 weight and one float32 scale per output channel."""
    weight = module.weight()
    return weight.numel() + 4 * weight.shape[0]
