"""Set transformer for point-cloud couplings (SurVAE Flows, Nielsen et al. 2020, Sec. 5.3;
blocks as in Vaswani et al. 2017 with pre-layer-normalisation, Xiong et al. 2020).

Without a positional embedding the network is permutation-equivariant over the points: permuting
the input points permutes the output identically, which PermuteFlow's couplings rely on.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from survae.errors import check_shape
from survae.nn.build import zero_init_
from survae.nn.dropout import Dropout, dropout
from survae.nn.fused_attention import fused_attention, supports
from survae.nn.mlp import activation as make_activation
from survae.registry import register


class SelfAttention(nn.Module):
    """Multi-head self-attention on ``[B, N, d]`` (same parameters as ``nn.MultiheadAttention``:
    a d→3d input and a d→d output projection), with dropout on the attention weights.

    On CUDA the fused ``scaled_dot_product_attention`` kernel does the work. On the CPU the
    heads of these networks are tiny (d_model 64 over 8 heads: 8 dimensions), where two batched
    matrix products and a softmax beat the fused CPU kernel (a PermuteFlow training step drops
    from ~3.9 s to ~2.5 s on 2 cores). They run transposed (key × query scores, the output as
    ``vᵀ·weights``): with an 8-wide head, the batched product whose output is 8 × N runs about
    twice as fast as the one whose output is N × 8 (attention forward + backward on 50 points
    ~12 % faster). With ``fused = True`` (``speed.fused_attention``) the CPU path is instead
    one compiled kernel (:mod:`survae.nn.fused_attention`). The paths compute the same
    function (tested); ``fused`` is not a parameter, so state dicts are unchanged.
    """

    fused: bool = False

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(
                f"SelfAttention: d_model ({d_model}) must be divisible by num_heads ({num_heads})"
            )
        self.num_heads, self.dropout = num_heads, dropout
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj.weight)
        nn.init.zeros_(self.in_proj.bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, d = x.shape
        p = self.dropout if self.training else 0.0
        qkv = self.in_proj(x)
        if self.fused and p < 1.0 and supports(qkv, self.num_heads):
            return self.out_proj(fused_attention(qkv, self.num_heads, p))
        qkv = qkv.reshape(B, N, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, N, d_head]
        if x.device.type == "cpu":
            # transposed: scores [.., key, query], softmax over keys, then vᵀ·weights
            scores_t = torch.matmul(k, q.transpose(-2, -1) * (q.shape[-1] ** -0.5))
            a_t = torch.matmul(v.transpose(-2, -1), dropout(torch.softmax(scores_t, dim=-2), p))
            a = a_t.permute(0, 3, 1, 2)  # [B, N, heads, d_head]
        else:
            a = F.scaled_dot_product_attention(q, k, v, dropout_p=p).transpose(1, 2)
        return self.out_proj(a.reshape(B, N, d))


class TransformerBlock(nn.Module):
    """Pre-LN block: ``x + drop(attn(LN(x)))`` then ``x + drop(W₂ act(W₁ LN(x)))`` (the official
    SurVAE ``DenseTransformerBlock``); ``inner_dropout=True`` also drops after the activation."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dim_feedforward: int,
        dropout: float = 0.0,
        activation_name: str = "gelu",
        inner_dropout: bool = True,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, num_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.act = make_activation(activation_name)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout = Dropout(dropout)
        self.inner_dropout = inner_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm1(x)))
        h = self.act(self.linear1(self.norm2(x)))
        if self.inner_dropout:
            h = self.dropout(h)
        return x + self.dropout(self.linear2(h))


def _official_init_(block: TransformerBlock) -> None:
    """The official SurVAE code's block initialisation (Sparse Transformer, Child et al. 2019,
    Sec. 6): every attention and feed-forward weight ~ N(0, (0.125 / √fan_in)²), biases 0."""
    for linear in (block.attn.in_proj, block.attn.out_proj, block.linear1, block.linear2):
        nn.init.normal_(linear.weight, std=0.125 / math.sqrt(linear.weight.shape[1]))
        nn.init.zeros_(linear.bias)


INITS = ("official", "xavier")


@register("network", "transformer")
class Transformer(nn.Module):
    """Transformer over a point set ``[B, in_channels, N] → [B, out_channels, N]``.

    linear (in→d_model) [+ learned positional embedding] → ``num_layers`` pre-LN blocks →
    LayerNorm → linear (d_model→out), zero-initialised by default so a coupling starts at the
    identity. ``positional_embedding=P`` adds an embedding over exactly ``P`` positions (inputs
    must then have ``N == P`` points; SortFlow's across-point couplings, whose points are
    ordered) and makes the network position-aware rather than permutation-equivariant.

    Options where survae and the official SurVAE code (``experiments/point_cloud/nets.py``)
    differ; the paper configs choose the official ones:

    * ``activation``: ``"gelu_sigmoid"`` (official, ``x·sigmoid(1.702x)``) or ``"gelu"`` (exact);
    * ``init``: ``"official"`` (block weights N(0, (0.125/√fan_in)²), block biases 0) or
      ``"xavier"`` (Xavier-uniform attention input projection, zero attention biases, PyTorch
      defaults elsewhere); both then divide the residual outputs' weights by √(2·num_layers);
    * ``inner_dropout``: also drop after the feed-forward activation (the official code does not).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        d_model: int = 64,
        num_layers: int = 2,
        num_heads: int = 8,
        dim_feedforward: int = 256,
        dropout: float = 0.1,
        positional_embedding: int | None = None,
        zero_init_output: bool = True,
        activation: str = "gelu",
        init: str = "xavier",
        inner_dropout: bool = True,
    ):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"Transformer: unknown init {init!r}; valid: {', '.join(INITS)}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_positions = positional_embedding
        self.inp = nn.Linear(in_channels, d_model)
        if positional_embedding is not None:
            self.pos_emb = nn.Parameter(
                torch.randn(positional_embedding, d_model) * (0.125 / math.sqrt(d_model))
            )
        else:
            self.register_parameter("pos_emb", None)
        self.layers = nn.ModuleList(
            TransformerBlock(
                d_model, num_heads, dim_feedforward, dropout, activation, inner_dropout
            )
            for _ in range(num_layers)
        )
        if init == "official":
            for layer in self.layers:
                _official_init_(layer)
        # Scale residual-branch outputs down with depth (GPT-2 style) for a stable start.
        with torch.no_grad():
            for layer in self.layers:
                layer.attn.out_proj.weight.div_(math.sqrt(2 * num_layers))
                layer.linear2.weight.div_(math.sqrt(2 * num_layers))
        self.out_norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, out_channels)
        if zero_init_output:
            zero_init_(self.out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(self, x, (None, self.in_channels, self.num_positions))
        h = self.inp(x.transpose(1, 2))  # [B, N, d_model]
        if self.pos_emb is not None:
            h = h + self.pos_emb
        for layer in self.layers:
            h = layer(h)
        return self.out(self.out_norm(h)).transpose(1, 2)
