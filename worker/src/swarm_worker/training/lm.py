"""The built-in language-model task `lm`: a GPT-style byte-level decoder on the stdlib's sources.

Model (nanoGPT's shape): token and learned position embeddings, `layers` pre-norm blocks
    x = x + proj(causal_attention(LayerNorm(x)))       scaled_dot_product_attention, is_causal
    x = x + fc2(gelu(fc1(LayerNorm(x))))               hidden width 4 * width
a final LayerNorm and an output head tied to the token embedding (logits = x @ E^T), so the
parameters are counted once and θ has one copy of E. Vocabulary: the 256 byte values, no tokenizer.
Parameters: 12 w² + 13 w per block, (256 + context) w for the embeddings, 2 w for the final norm.

Presets (task option `preset`), with their exact parameter counts at their default context:
    tiny    width 128, 5 layers, 4 heads, context 64     1,032,576   (CI, CPU)
    small   width 512, 8 layers, 8 heads, context 256   25,482,240
    base    width 768, 14 layers, 12 heads, context 512  99,821,568

Task options (spec.task.options), all optional:
    preset              tiny | small | base (default tiny)
    context             window length T in bytes (default: the preset's)
    width, layers, heads    override the preset's shape
    corpusBytes         bytes of stdlib sources read, both splits together (default 4,000,000)
    validationFraction  share of the files held out for validation (default 0.1)
    evalTokens          tokens of the fixed validation subset the root evaluates (default 32,768)

Data (swarm_worker.training.corpus): examples are windows x (T,) of bytes with targets y (T,), the
next byte at every position; both uint8. The loss is the mean cross-entropy over all B·T positions
of a batch, in nats: ln 256 = 5.55 is a uniform guess. Evaluation (tasks.evaluate) reports this
loss on the validation subset and the next-byte accuracy; perplexity is exp(loss). The corpus
depends on the Python version (see corpus.py), and so do the figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 (torch's own idiom)

from swarm_worker.training.corpus import read_corpus, spread_subset, stdlib_dir, windows

VOCAB = 256
#: The task options this module reads (see the module docstring); any other is refused.
OPTIONS = ("preset", "context", "width", "layers", "heads", "corpusBytes", "validationFraction", "evalTokens")


@dataclass(frozen=True)
class LMConfig:
    width: int
    layers: int
    heads: int
    context: int
    vocab: int = VOCAB

    def __post_init__(self) -> None:
        for name in ("width", "layers", "heads", "context"):
            if getattr(self, name) < 1:
                raise ValueError(f"task.options.{name} must be >= 1, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"task.options: width {self.width} is not a multiple of heads {self.heads}")


PRESETS: dict[str, LMConfig] = {
    "tiny": LMConfig(width=128, layers=5, heads=4, context=64),
    "small": LMConfig(width=512, layers=8, heads=8, context=256),
    "base": LMConfig(width=768, layers=14, heads=12, context=512),
}


def expected_parameters(cfg: LMConfig) -> int:
    """The parameter count of GPT(cfg), from the formula in the module docstring."""
    w = cfg.width
    return cfg.layers * (12 * w * w + 13 * w) + (cfg.vocab + cfg.context) * w + 2 * w


class Block(nn.Module):
    """One pre-norm transformer block; (B, T, w) -> (B, T, w)."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        w = cfg.width
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(w)
        self.qkv = nn.Linear(w, 3 * w)
        self.proj = nn.Linear(w, w)
        self.norm2 = nn.LayerNorm(w)
        self.fc1 = nn.Linear(w, 4 * w)
        self.fc2 = nn.Linear(4 * w, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        # (B, T, 3w) -> three (B, heads, T, w / heads)
        q, k, v = (
            part.view(b, t, self.heads, w // self.heads).transpose(1, 2)
            for part in self.qkv(self.norm1(x)).split(w, dim=2)
        )
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, t, w))
        out: torch.Tensor = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return out


class GPT(nn.Module):
    """Byte indices (B, T), any integer dtype, T <= context -> logits (B, T, 256)."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.token = nn.Embedding(cfg.vocab, cfg.width)
        self.position = nn.Embedding(cfg.context, cfg.width)
        blocks = [Block(cfg) for _ in range(cfg.layers)]
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(cfg.width)
        self.apply(self._init)
        # GPT-2's scaling: each residual branch's output projection shrinks with depth, so the
        # residual stream's variance does not grow with the number of blocks.
        for block in blocks:
            for out in (block.proj, block.fc2):
                nn.init.normal_(out.weight, std=0.02 / math.sqrt(2 * cfg.layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.cfg.context:
            raise ValueError(f"sequence of {t} bytes is longer than the context {self.cfg.context}")
        positions = torch.arange(t, device=idx.device)
        x = self.token(idx.long()) + self.position(positions)  # (B, T, w)
        for block in self.blocks:
            x = block(x)
        return F.linear(self.norm(x), self.token.weight)  # tied head: (B, T, 256)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every position: logits (B, T, V), targets (B, T) byte values."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long())


def config_from_options(options: Mapping[str, Any]) -> LMConfig:
    preset = str(options.get("preset", "tiny"))
    if preset not in PRESETS:
        raise ValueError(f"task.options.preset: {preset!r} is not one of {', '.join(PRESETS)}")
    base = PRESETS[preset]
    overrides = {
        k: _int_option(options, k, 0) for k in ("width", "layers", "heads", "context") if k in options
    }
    return replace(base, **overrides)


def _int_option(options: Mapping[str, Any], name: str, default: int) -> int:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"task.options.{name}: expected an integer, got {value!r}")
    return value


def _float_option(options: Mapping[str, Any], name: str, default: float) -> float:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"task.options.{name}: expected a number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class LMData:
    """Training windows, the fixed validation subset, and the model's configuration."""

    config: LMConfig
    train_x: torch.Tensor  # (n, T) uint8
    train_y: torch.Tensor  # (n, T) uint8
    test_x: torch.Tensor  # (m, T) uint8, m = evalTokens // T windows spread over validation
    test_y: torch.Tensor


def lm_data(options: Mapping[str, Any]) -> LMData:
    """The corpus cut into windows, as the options ask (raises ValueError naming a bad option)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"task.options: unknown option(s) {', '.join(unknown)} for task lm")
    cfg = config_from_options(options)
    corpus = read_corpus(
        stdlib_dir(),
        _int_option(options, "corpusBytes", 4_000_000),
        _float_option(options, "validationFraction", 0.1),
    )
    train_x, train_y = windows(corpus.train, cfg.context)
    val_x, val_y = windows(corpus.validation, cfg.context)
    eval_windows = max(1, _int_option(options, "evalTokens", 32_768) // cfg.context)
    subset = spread_subset(len(val_x), eval_windows)
    return LMData(cfg, train_x, train_y, val_x[subset], val_y[subset])
