"""A decoder-only transformer over the elements of an image in raster order (rows, columns,
then channels), the official SurVAE library's autoregressive transformer for 2-D
autoregressive flows (image-to-sequence, a learned start token shifting the sequence right,
positional encodings, causal self-attention), built on ``torch.nn.TransformerEncoder``.

Output ``P·C`` channels with parameter ``p`` of channel ``c`` at ``p·C + c``, the layout of
:mod:`~survae.transforms.bijections.autoregressive_2d`: the output at ``(c, h, w)`` depends on
the inputs strictly before it in the order only.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from survae.registry import register


def sinusoidal_encoding(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """``[len(positions), dim]`` sine/cosine encodings (Vaswani et al. 2017)."""
    half = dim // 2
    freq = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float64) / half)
    angles = positions.to(torch.float64).unsqueeze(1) * freq
    enc = torch.cat([angles.sin(), angles.cos()], dim=1)
    if dim % 2:
        enc = torch.cat([enc, torch.zeros(len(positions), 1, dtype=enc.dtype)], dim=1)
    return enc


@register("network", "ar_transformer_2d")
class AutoregressiveTransformer2d(nn.Module):
    """Causal transformer on ``[B, C, H, W]`` → ``[B, P·C, H, W]`` (see the module docstring).

    Each element is a token: its value through a linear embedding, shifted right by one with a
    learned start token in front, plus the sinusoidal encoding of its pixel index and a learned
    embedding of its channel (both of the element being predicted). ``num_layers`` pre-norm
    encoder layers with a causal mask, then a linear map to ``P`` parameters per element
    (zero-initialised with ``zero_init_output``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        embed_dim: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 256,
        dropout: float = 0.0,
        zero_init_output: bool = True,
    ):
        super().__init__()
        if out_channels % in_channels:
            raise ValueError(
                f"AutoregressiveTransformer2d: out_channels ({out_channels}) must be a multiple "
                f"of in_channels ({in_channels})"
            )
        self.in_channels, self.num_params = int(in_channels), out_channels // in_channels
        self.embed_dim = int(embed_dim)
        self.value = nn.Linear(1, embed_dim)
        self.start = nn.Parameter(torch.zeros(embed_dim))
        self.channel = nn.Embedding(self.in_channels, embed_dim)
        layer = nn.TransformerEncoderLayer(
            embed_dim, num_heads, dim_feedforward, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.out = nn.Linear(embed_dim, self.num_params)
        nn.init.normal_(self.start, std=0.02)
        if zero_init_output:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        L = C * H * W
        seq = x.permute(0, 2, 3, 1).reshape(B, L, 1)  # index (h·W + w)·C + c
        tokens = self.value(seq.to(self.value.weight.dtype))
        start = self.start.view(1, 1, -1).expand(B, 1, -1)
        tokens = torch.cat([start, tokens[:, :-1]], dim=1)  # token i sees x_<i only
        index = torch.arange(L, device=x.device)
        pixel = sinusoidal_encoding(index // C, self.embed_dim).to(tokens)
        tokens = tokens + pixel + self.channel(index % C)
        mask = nn.Transformer.generate_square_subsequent_mask(
            L, device=x.device, dtype=tokens.dtype
        )
        h = self.encoder(tokens, mask=mask, is_causal=True)
        params = self.out(h).view(B, H, W, C, self.num_params)
        return params.permute(0, 4, 3, 1, 2).reshape(B, self.num_params * C, H, W)
