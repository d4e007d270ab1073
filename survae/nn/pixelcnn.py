"""PixelCNN (van den Oord et al. 2016): masked convolutions that make a network of images
autoregressive in raster order (rows, then columns, then channels within a pixel).

Feature channels are tied to data channels in turn (feature ``i`` to data channel
``i mod C``). At the centre of a kernel, a type-A mask lets an output tied to channel ``c``
see inputs tied to channels ``< c``; type B also ``= c``. Kernel positions right of the
centre in its row and all rows below are masked out. A type-A first layer followed by type-B
layers gives outputs at ``(c, h, w)`` that depend only on inputs earlier in the order: the
autoregressive networks of the official SurVAE library's 2-D autoregressive flows.

``spatial_only=True`` drops the channel rule (the official spatially masked convolutions): a
type-A mask hides the whole centre pixel, type B shows all of it, so an output at ``(h, w)``
depends on the pixels before ``(h, w)`` only, every channel of them; 2-D autoregressive flows
on it invert in ``H·W`` passes (``order="raster_wh"``).

Output layout: ``P·C`` channels with parameter ``p`` of data channel ``c`` at ``p·C + c`` (what
the masks produce; :class:`~survae.transforms.bijections.autoregressive_2d` reads it so).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from survae.registry import register


def channel_mask(mask_type: str, in_channels: int, out_channels: int, data_channels: int):
    """``[out, in]`` 0/1 mask of the kernel centre for channel-autoregressive features."""
    out_group = torch.arange(out_channels).view(-1, 1) % data_channels
    in_group = torch.arange(in_channels).view(1, -1) % data_channels
    allowed = in_group < out_group if mask_type == "A" else in_group <= out_group
    return allowed.float()


def conv_mask(
    mask_type: str, in_channels: int, out_channels: int, kh: int, kw: int, data_channels: int
) -> torch.Tensor:
    """``[out, in, kh, kw]`` mask of a PixelCNN convolution (see the module docstring);
    ``data_channels=0``: spatial masking only."""
    if mask_type not in ("A", "B"):
        raise ValueError(f"MaskedConv2d: mask_type must be 'A' or 'B', got {mask_type!r}")
    mask = torch.ones(out_channels, in_channels, kh, kw)
    mask[:, :, kh // 2, kw // 2 :] = 0
    mask[:, :, kh // 2 + 1 :] = 0
    if data_channels == 0:  # spatial only: the centre pixel all hidden (A) or all shown (B)
        mask[:, :, kh // 2, kw // 2] = 0.0 if mask_type == "A" else 1.0
    else:
        centre = channel_mask(mask_type, in_channels, out_channels, data_channels)
        mask[:, :, kh // 2, kw // 2] = centre
    return mask


class MaskedConv2d(nn.Conv2d):
    """A ``Conv2d`` whose weight is multiplied by a fixed PixelCNN mask (a buffer) on use;
    'same' padding for odd kernels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        mask_type: str,
        data_channels: int,
    ):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        mask = conv_mask(
            mask_type, in_channels, out_channels, kernel_size, kernel_size, data_channels
        )
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class MaskedResidualBlock2d(nn.Module):
    """``x + conv1x1(relu(conv_k(relu(conv1x1(relu(x))))))`` with type-B masks, ``2h`` channels
    in and out and ``h`` inside."""

    def __init__(self, h: int, kernel_size: int, data_channels: int):
        super().__init__()
        self.conv1 = MaskedConv2d(2 * h, h, 1, "B", data_channels)
        self.conv2 = MaskedConv2d(h, h, kernel_size, "B", data_channels)
        self.conv3 = MaskedConv2d(h, 2 * h, 1, "B", data_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(x))
        y = self.conv2(F.relu(y))
        return x + self.conv3(F.relu(y))


@register("network", "pixelcnn")
class PixelCNN(nn.Module):
    """PixelCNN: a type-A ``kernel_size_in`` convolution to ``2·filters`` channels,
    ``num_blocks`` masked residual blocks, then two type-B 1×1 convolutions (through
    ``output_filters`` channels) to ``out_channels`` (a multiple of ``in_channels``).

    The official network also maps its input by ``2x − 1`` first; here ``input_scale`` and
    ``input_shift`` do that (defaults 1 and 0: none). ``zero_init_output`` zeroes the last
    layer so that a flow built on it starts at its zero-parameter map.

    ``context_channels > 0``: ``forward(x, context)`` with a context ``[B, context_channels,
    H, W]`` added to the first layer's output through an unmasked 1×1 convolution (the
    context is not part of the autoregressive order, so every output may see all of it).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        filters: int = 128,
        num_blocks: int = 15,
        output_filters: int = 1024,
        kernel_size: int = 3,
        kernel_size_in: int = 7,
        input_scale: float = 1.0,
        input_shift: float = 0.0,
        zero_init_output: bool = False,
        context_channels: int = 0,
        spatial_only: bool = False,
    ):
        super().__init__()
        if out_channels % in_channels:
            raise ValueError(
                f"PixelCNN: out_channels ({out_channels}) must be a multiple of in_channels "
                f"({in_channels})"
            )
        C = int(in_channels)
        self.spatial_only = bool(spatial_only)
        groups = 0 if self.spatial_only else C  # data_channels of the masks
        self.input_scale, self.input_shift = float(input_scale), float(input_shift)
        self.conv_in = MaskedConv2d(C, 2 * filters, kernel_size_in, "A", groups)
        self.context_channels = int(context_channels)
        self.context_in = (
            nn.Conv2d(self.context_channels, 2 * filters, 1) if self.context_channels else None
        )
        self.blocks = nn.Sequential(
            *(MaskedResidualBlock2d(filters, kernel_size, groups) for _ in range(num_blocks))
        )
        self.conv_mid = MaskedConv2d(2 * filters, output_filters, 1, "B", groups)
        self.conv_out = MaskedConv2d(output_filters, out_channels, 1, "B", groups)
        if zero_init_output:
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv_in(x * self.input_scale + self.input_shift)
        if self.context_in is not None:
            if context is None:
                raise ValueError("PixelCNN: built with context_channels, so it needs a context")
            h = h + self.context_in(context.to(h.dtype))
        h = self.blocks(h)
        return self.conv_out(F.relu(self.conv_mid(F.relu(h))))
