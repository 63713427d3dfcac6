"""Vision encoders behind one adapter: images -> vision tokens (B, N, Dv) and a pooled vector (B, Dv).

Registry keys (`VisionConfig.name`):
- `cnn_small`: a small from-scratch conv net (stem + strided residual blocks, GroupNorm), its output grid
  flattened to tokens plus a learned 2D position embedding.
- `vit_small`: a plain-PyTorch ViT built from the config, from scratch.
- `hf`: any transformers vision model in a local directory (`VisionConfig.pretrained_path`): ViT, Swin,
  ConvNeXt, SigLIP vision, DINOv2, ...; its patch tokens (last hidden state) are the vision tokens.

Images arrive normalised as the data pipeline does it (`(x - vision.mean) / vision.std`, `vision.channels`
channels). `MultiViewEncoder` handles studies of several views: (B, V, C, H, W) + view mask (B, V) ->
tokens of all views concatenated (B, V*N, Dv) with a token mask and a learned view embedding.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from leadrrg.config import VisionConfig
from leadrrg.errors import LeadrrgError
from leadrrg.registry import Registry

VISION_ENCODERS: Registry = Registry("vision encoder")


class VisionEncoder(nn.Module):
    """Interface: `forward(images (B, C, H, W)) -> (vision_tokens (B, N, Dv), pooled (B, Dv))`.

    Subclasses set `hidden_size` (Dv) and `grid` ((h, w) with h * w == N) after construction."""

    hidden_size: int
    grid: tuple[int, int]
    frozen: bool = False  # a frozen encoder stays in eval mode (no dropout, fixed norm statistics)

    def train(self, mode: bool = True) -> VisionEncoder:
        return super().train(mode and not self.frozen)


def create_vision_encoder(config: VisionConfig) -> VisionEncoder:
    """Build the encoder named by `config.name` (unknown names fail with the registered ones)."""
    encoder = VISION_ENCODERS.get(config.name)(config)
    if config.freeze:
        encoder.requires_grad_(False)
        encoder.frozen = True
        encoder.eval()
    return encoder


# --------------------------------------------------------------------------------------------------
# cnn_small


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ConvBlock(nn.Module):
    """Strided residual block: (B, Cin, H, W) -> (B, Cout, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)
        self.norm1 = _group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = _group_norm(out_channels)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.gelu(y + self.shortcut(x))


@VISION_ENCODERS.register("cnn_small")
class SmallCNN(VisionEncoder):
    """Conv stem (stride 2) + `num_layers - 1` strided blocks; widths double up to `hidden_size`.

    128 px input, 4 layers -> an 8 x 8 grid of 64 tokens."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        depth = config.num_layers
        widths = [max(16, config.hidden_size // 2 ** (depth - 1 - i)) for i in range(depth)]
        widths[-1] = config.hidden_size
        self.stem = nn.Sequential(
            nn.Conv2d(config.channels, widths[0], 5, stride=2, padding=2, bias=False),
            _group_norm(widths[0]),
            nn.GELU(),
        )
        self.blocks = nn.Sequential(*[ConvBlock(widths[i], widths[i + 1]) for i in range(depth - 1)])
        side = config.image_size
        for _ in range(depth):
            side = (side + 1) // 2
        self.grid = (side, side)
        self.hidden_size = config.hidden_size
        self.row_embedding = nn.Parameter(torch.randn(side, 1, config.hidden_size) * 0.02)
        self.col_embedding = nn.Parameter(torch.randn(1, side, config.hidden_size) * 0.02)
        self.norm = nn.LayerNorm(config.hidden_size)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.blocks(self.stem(images))  # (B, Dv, h, w)
        if tuple(x.shape[-2:]) != self.grid:
            raise LeadrrgError(
                f"vision.image_size is {self.grid} tokens' worth but images are {tuple(images.shape[-2:])}"
            )
        x = x.flatten(2).transpose(1, 2)  # (B, h*w, Dv)
        x = x + (self.row_embedding + self.col_embedding).flatten(0, 1)  # learned 2D position
        tokens = self.norm(x)
        return tokens, tokens.mean(dim=1)


# --------------------------------------------------------------------------------------------------
# vit_small


@VISION_ENCODERS.register("vit_small")
class SmallViT(VisionEncoder):
    """Patch embedding + learned position embedding + pre-norm transformer encoder, from scratch."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        if config.image_size % config.patch_size:
            raise LeadrrgError(
                f"vision.image_size ({config.image_size}) must be divisible by vision.patch_size ({config.patch_size})"
            )
        if config.hidden_size % config.num_heads:
            raise LeadrrgError(
                f"vision.hidden_size ({config.hidden_size}) must be divisible by vision.num_heads ({config.num_heads})"
            )
        side = config.image_size // config.patch_size
        self.grid = (side, side)
        self.hidden_size = config.hidden_size
        self.patch_embedding = nn.Conv2d(
            config.channels, config.hidden_size, config.patch_size, stride=config.patch_size
        )
        self.position_embedding = nn.Parameter(torch.randn(1, side * side, config.hidden_size) * 0.02)
        layer = nn.TransformerEncoderLayer(
            config.hidden_size,
            config.num_heads,
            dim_feedforward=4 * config.hidden_size,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.hidden_size)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.patch_embedding(images).flatten(2).transpose(1, 2)  # (B, N, Dv)
        tokens = self.norm(self.encoder(x + self.position_embedding))
        return tokens, tokens.mean(dim=1)


# --------------------------------------------------------------------------------------------------
# hf: a local transformers vision model


def _read_preprocessor_stats(path: Path) -> tuple[list[float], list[float]] | None:
    """`image_mean` / `image_std` of a local `preprocessor_config.json`, or None when absent."""
    file = path / "preprocessor_config.json"
    if not file.is_file():
        return None
    stats = json.loads(file.read_text())
    if "image_mean" not in stats or "image_std" not in stats:
        return None
    return list(stats["image_mean"]), list(stats["image_std"])


def _patch_tokens(output, grid_side: int | None) -> torch.Tensor:
    """(B, N, Dv) patch tokens from a transformers vision output: 4D maps are flattened; leading CLS and
    register tokens (whatever precedes the patch grid) are dropped."""
    hidden = output.last_hidden_state
    if hidden.dim() == 4:  # ConvNeXt-style (B, C, h, w)
        return hidden.flatten(2).transpose(1, 2)
    if grid_side is not None and hidden.shape[1] > grid_side * grid_side:
        return hidden[:, hidden.shape[1] - grid_side * grid_side :]
    return hidden


@VISION_ENCODERS.register("hf")
class HFVisionEncoder(VisionEncoder):
    """A transformers vision model from `VisionConfig.pretrained_path` (local files only).

    Inputs normalised with `vision.mean` / `vision.std` are mapped back to [0, 1], repeated to the model's
    channels and re-normalised with the mean/std of the model's `preprocessor_config.json` when present."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if not config.pretrained_path:
            raise LeadrrgError(
                "vision.name is 'hf' but vision.pretrained_path is not set; expected a local model directory"
            )
        path = Path(config.pretrained_path)
        if not (path / "config.json").is_file():
            raise LeadrrgError(
                f"vision.pretrained_path {path} has no config.json; expected a transformers model directory"
            )
        hf_config = AutoConfig.from_pretrained(path, local_files_only=True)
        if hasattr(hf_config, "vision_config") and not hasattr(hf_config, "num_channels"):
            hf_config = hf_config.vision_config  # e.g. a SigLIP checkpoint: keep its vision tower
        self.model = AutoModel.from_pretrained(path, config=hf_config, local_files_only=True)
        self.model_channels = int(getattr(hf_config, "num_channels", 3))
        self.input_mean, self.input_std = config.mean, config.std
        stats = _read_preprocessor_stats(path)
        mean, std = stats if stats else ([config.mean], [config.std])
        self.register_buffer("pixel_mean", _channel_stats(mean, self.model_channels), persistent=False)
        self.register_buffer("pixel_std", _channel_stats(std, self.model_channels), persistent=False)
        patch = getattr(hf_config, "patch_size", None)
        self.grid_side = config.image_size // patch if isinstance(patch, int) else None
        probe = torch.zeros(1, config.channels, config.image_size, config.image_size)
        try:
            with torch.enable_grad():  # freeze_unused reads this graph, however the encoder is built
                tokens, _ = self.forward(probe)
        except Exception as exc:
            raise LeadrrgError(
                f"the vision model in {path} does not accept {config.image_size} px images ({exc}); "
                "set vision.image_size to the size it was trained on"
            ) from None
        n = tokens.shape[1]
        side = math.isqrt(n)
        self.grid = (side, side) if side * side == n else (1, n)
        self.hidden_size = tokens.shape[-1]
        self.freeze_unused(tokens)

    def freeze_unused(self, tokens: torch.Tensor) -> None:
        """Freeze the parameters the patch `tokens` (of a probe forward) do not depend on: a pooler or a
        classification head that `AutoModel` keeps never gets a gradient, which DDP (without
        find_unused_parameters) reports as an error at the second step. Frozen, they change nothing this encoder
        returns, and they are not saved with the run."""
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if not trainable:
            return
        grads = torch.autograd.grad(tokens.sum(), trainable, allow_unused=True)
        for parameter, grad in zip(trainable, grads):
            if grad is None:
                parameter.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = images * self.input_std + self.input_mean  # back to [0, 1]
        if pixels.shape[1] != self.model_channels:
            pixels = pixels.mean(dim=1, keepdim=True).expand(-1, self.model_channels, -1, -1)
        pixels = (pixels - self.pixel_mean) / self.pixel_std
        tokens = _patch_tokens(self.model(pixel_values=pixels), self.grid_side)  # (B, N, Dv)
        return tokens, tokens.mean(dim=1)


def _channel_stats(values: list[float], channels: int) -> torch.Tensor:
    """(1, C, 1, 1) per-channel statistics; a single value is broadcast to every channel."""
    if len(values) not in (1, channels):
        raise LeadrrgError(f"preprocessor statistics {values} do not match the model's {channels} channels")
    return torch.tensor(values, dtype=torch.float32).expand(channels).reshape(1, channels, 1, 1).clone()


# --------------------------------------------------------------------------------------------------
# Multi-view studies


@dataclass
class VisionOutput:
    """Vision tokens of a study.

    tokens: (B, V*N, Dv), views concatenated; token_mask: (B, V*N) bool, False for tokens of missing views;
    pooled: (B, Dv), mean over present views; grid: (h, w) per view, h * w == N; num_views: V."""

    tokens: torch.Tensor
    token_mask: torch.Tensor
    pooled: torch.Tensor
    grid: tuple[int, int]
    num_views: int


class MultiViewEncoder(nn.Module):
    """Encodes the B*V images of a batch of studies with one encoder and tags tokens with their view."""

    def __init__(self, config: VisionConfig, max_views: int):
        super().__init__()
        self.encoder = create_vision_encoder(config)
        self.hidden_size = self.encoder.hidden_size
        self.max_views = max_views
        self.view_embedding = nn.Parameter(torch.zeros(max_views, self.hidden_size))

    def forward(self, images: torch.Tensor, view_mask: torch.Tensor) -> VisionOutput:
        """images (B, V, C, H, W), view_mask (B, V) bool -> VisionOutput."""
        batch, views = images.shape[:2]
        if views > self.max_views:
            raise LeadrrgError(f"a study has {views} views but model.max_views is {self.max_views}")
        tokens, pooled = self.encoder(images.flatten(0, 1))  # (B*V, N, Dv), (B*V, Dv)
        n = tokens.shape[1]
        tokens = tokens.view(batch, views, n, -1) + self.view_embedding[:views, None, :]  # (B, V, N, Dv)
        token_mask = view_mask[:, :, None].expand(batch, views, n).reshape(batch, views * n)  # (B, V*N)
        weights = view_mask.to(pooled.dtype)[..., None]  # (B, V, 1)
        pooled = (pooled.view(batch, views, -1) * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # (B, Dv)
        return VisionOutput(
            tokens.reshape(batch, views * n, -1), token_mask, pooled, self.encoder.grid, views
        )
