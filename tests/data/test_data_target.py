"""data=target: placeholder batches of the target's dimension, and the target it names."""

import pytest
import torch

from survae import registry
from survae.data.target import TargetDataModule


def test_target_module_yields_placeholder_batches_of_the_target_dimension():
    dm = registry.build("dataset", "target", target={"name": "double_well", "dim": 3},
                        train_size=40, val_size=8, test_size=12, batch_size=16)  # fmt: skip
    assert isinstance(dm, TargetDataModule)
    assert dm.kind == "target" and dm.shape == (3,) and dm.num_bins is None
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 2 and batches[0].shape == (16, 3)  # drop_last: 40 = 2·16 + 8
    assert torch.equal(batches[0], torch.zeros(16, 3))
    assert sum(len(b) for b in dm.test_dataloader()) == 12
    assert dm.build_target().log_normalizer is not None


def test_unknown_target_and_bad_sizes_are_named():
    with pytest.raises(KeyError, match="two_moons_energy"):
        TargetDataModule(target="two_moon")
    with pytest.raises(ValueError, match="split sizes"):
        TargetDataModule(train_size=0)
