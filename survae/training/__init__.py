"""Training: the Lightning module, callbacks, loggers, checkpoints and the run pipeline.

Nothing here knows about Hydra: ``train`` takes a plain mapping.
"""

from survae.training.module import FlowModule, NonFiniteLossError
from survae.training.pipeline import train

__all__ = ["FlowModule", "NonFiniteLossError", "train"]
