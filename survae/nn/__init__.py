"""Networks used inside layers (registered as ``network``); each takes
``(in_channels, out_channels, **hyperparameters)``."""

from survae.nn.ar_transformer import AutoregressiveTransformer2d
from survae.nn.build import build_network, zero_init_
from survae.nn.convnet import ConvNet
from survae.nn.densenet import DenseBlock, DenseNet, GatedConv2d
from survae.nn.flowpp import FlowPPNet
from survae.nn.glow import GlowNet, ZeroConv2d
from survae.nn.made import MADE
from survae.nn.mlp import MLP
from survae.nn.multiscale_densenet import MultiscaleDenseNet
from survae.nn.pixelcnn import PixelCNN
from survae.nn.resmade import ResidualMADE
from survae.nn.resmlp import ResidualMLP
from survae.nn.resnet import ResNet
from survae.nn.transformer import Transformer

__all__ = [
    "AutoregressiveTransformer2d",
    "MultiscaleDenseNet",
    "MADE",
    "MLP",
    "PixelCNN",
    "ConvNet",
    "DenseBlock",
    "DenseNet",
    "FlowPPNet",
    "GatedConv2d",
    "GlowNet",
    "ResNet",
    "ResidualMADE",
    "ResidualMLP",
    "Transformer",
    "ZeroConv2d",
    "build_network",
    "zero_init_",
]
