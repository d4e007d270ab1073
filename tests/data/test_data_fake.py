"""The fake-file writer produces files every file-based data module loads."""

import pytest
import torch

from survae import registry
from survae.data.fake import WRITERS, write_fake_dataset

EXPECTED_SHAPE = {
    "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32),
    "imagenet32": (3, 32, 32), "imagenet64": (3, 64, 64), "spatial_mnist": (50, 2),
    "power": (6,), "gas": (8,), "hepmass": (21,), "miniboone": (43,), "bsds300": (63,),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_fake_files_load_with_the_real_loader(name, tmp_path):
    write_fake_dataset(name, tmp_path, num=48)
    cls = registry.get("dataset", name)
    kwargs = {"root": str(tmp_path), "batch_size": 4}
    if name in ("mnist", "fashion_mnist", "cifar10", "imagenet32", "imagenet64", "spatial_mnist"):
        kwargs["val_size"] = 8
    if name == "cifar10":
        kwargs["check_integrity"] = False
    dm = cls(**kwargs)
    dm.setup()
    x = next(iter(dm.train_dataloader()))
    assert tuple(x.shape[1:]) == EXPECTED_SHAPE[name] == tuple(dm.shape)
    assert x.dtype == (torch.uint8 if dm.kind == "image" else torch.float32)


def test_unknown_fake_name_lists_choices(tmp_path):
    with pytest.raises(ValueError, match="cifar10"):
        write_fake_dataset("svhn", tmp_path)
