"""Networks used inside layers (registered as ``network``)."""

from survae.nn.build import build_network, zero_init_
from survae.nn.mlp import MLP

__all__ = ["MLP", "build_network", "zero_init_"]
