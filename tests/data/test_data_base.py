"""FlowDataModule machinery: array data sets, splits, loaders, augmentation, the registry."""

import pickle

import numpy as np
import pytest
import torch

from survae import registry
from survae.data.augment import RandomFlipTranslate
from survae.data.base import ArrayDataset, FlowDataModule, collate, describe, split_indices
from survae.data.errors import DatasetNotFoundError
from survae.registry import UnknownNameError

NAMES = {
    "checkerboard",
    "gaussian_classes",
    "rotated_moons",
    "corners",
    "eight_gaussians",
    "four_circles",
    "two_moons",
    "two_spirals",
    "pinwheel",
    "rings",
    "torus_mixture",
    "target",
    "gaussian",
    "crescent",
    "crescent_cubed",
    "sinewave",
    "abs",
    "sign",
    "diamond",
    "digits",
    "mnist",
    "binarized_mnist",
    "binarized_mnist_fixed",
    "binarized_omniglot",
    "svhn",
    "celeba",
    "fashion_mnist",
    "cifar10",
    "imagenet32",
    "imagenet64",
    "spatial_mnist",
    "power",
    "gas",
    "hepmass",
    "miniboone",
    "bsds300",
}

EXPECTED = {  # name -> (kind, shape, num_bins)
    "checkerboard": ("toy", (2,), None),
    "digits": ("image", (1, 8, 8), 17),
    "mnist": ("image", (1, 28, 28), 256),
    "fashion_mnist": ("image", (1, 28, 28), 256),
    "binarized_mnist": ("image", (1, 28, 28), 2),
    "binarized_mnist_fixed": ("image", (1, 28, 28), 2),
    "binarized_omniglot": ("image", (1, 28, 28), 2),
    "svhn": ("image", (3, 32, 32), 256),
    "celeba": ("image", (3, 64, 64), 256),
    "sinewave": ("toy", (2,), None),
    "torus_mixture": ("toy", (2,), None),
    "target": ("target", (2,), None),
    "cifar10": ("image", (3, 32, 32), 256),
    "imagenet32": ("image", (3, 32, 32), 256),
    "imagenet64": ("image", (3, 64, 64), 256),
    "spatial_mnist": ("points", (50, 2), None),
    "power": ("tabular", (6,), None),
    "gas": ("tabular", (8,), None),
    "hepmass": ("tabular", (21,), None),
    "miniboone": ("tabular", (43,), None),
    "bsds300": ("tabular", (63,), None),
}


def test_registry_names_exact():
    assert set(registry.available("dataset")) == NAMES
    for name in NAMES:
        cls = registry.get("dataset", name)
        assert issubclass(cls, FlowDataModule)
        assert cls.name == name


def test_unknown_name_raises_registry_error():
    with pytest.raises(UnknownNameError, match="cifar10"):
        registry.build("dataset", "cifar_10")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_attributes_without_setup(name, tmp_path):
    dm = registry.build("dataset", name, root=str(tmp_path), batch_size=4)
    kind, shape, bins = EXPECTED[name]
    assert (dm.kind, dm.shape, dm.num_bins, dm.name) == (kind, shape, bins, name)
    assert dm.eval_batch_size == 4
    assert dm.pin_memory == torch.cuda.is_available()


FILE_BASED = [
    "mnist", "fashion_mnist", "cifar10", "imagenet32", "imagenet64", "spatial_mnist",
    "power", "gas", "hepmass", "miniboone", "bsds300",
]  # fmt: skip


@pytest.mark.parametrize("name", FILE_BASED)
def test_missing_data_raises_not_found(name, tmp_path):
    dm = registry.build("dataset", name, root=str(tmp_path), batch_size=4)
    dm.prepare_data()  # download=False: never fetches, never fails
    with pytest.raises(DatasetNotFoundError) as info:
        dm.setup()
    msg = str(info.value)
    assert str(tmp_path) in msg and "How to get it" in msg
    assert isinstance(info.value, FileNotFoundError)


def test_array_dataset_batched_fetch_and_subset():
    data = torch.arange(20).reshape(10, 2)
    ds = ArrayDataset(data, indices=[7, 2, 5])
    assert len(ds) == 3
    assert torch.equal(ds[0], data[7])
    assert torch.equal(ds.__getitems__([2, 0]), data[[5, 7]])
    doubled = ArrayDataset(data, transform=lambda x: 2 * x)
    assert torch.equal(doubled.__getitems__([1]), 2 * data[[1]])


def test_array_dataset_memmap_pickles_by_name(tmp_path):
    arr = (np.arange(60_000) % 251).astype(np.uint8).reshape(20_000, 3)
    np.save(tmp_path / "a.npy", arr)
    mm = np.load(tmp_path / "a.npy", mmap_mode="r")
    ds = ArrayDataset(mm, indices=np.arange(50, 200))
    blob = pickle.dumps(ds)
    assert len(blob) < arr.nbytes  # not copied whole
    clone = pickle.loads(blob)
    assert isinstance(clone.data, np.memmap)
    idx = [5, 149, 0, 5]
    assert torch.equal(clone.__getitems__(idx), torch.from_numpy(arr[np.array(idx) + 50]))
    assert torch.equal(ds.__getitems__(idx), clone.__getitems__(idx))


def test_collate_passes_tensor_batches():
    t = torch.ones(3, 2)
    assert collate(t) is t
    assert torch.equal(collate([torch.zeros(2), torch.ones(2)]), torch.tensor([[0.0, 0], [1, 1]]))


def test_split_indices_disjoint_fixed_and_validated():
    a, b, rest = split_indices(50, [5, 10], seed=3)
    assert (len(a), len(b), len(rest)) == (5, 10, 35)
    assert len(set(a) | set(b) | set(rest)) == 50
    a2, b2, _ = split_indices(50, [5, 10], seed=3)
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    assert not np.array_equal(split_indices(50, [5], seed=4)[0], a)
    with pytest.raises(ValueError, match="carve"):
        split_indices(10, [10], seed=0)


def test_loaders_batches_shuffle_and_drop_last():
    dm = registry.build(
        "dataset", "rings", batch_size=32, eval_batch_size=100, train_size=100, val_size=250,
        test_size=30, seed=5,
    )  # fmt: skip
    batches = list(dm.train_dataloader())
    assert [len(b) for b in batches] == [32, 32, 32]  # last incomplete batch dropped
    seen = torch.cat(batches)
    assert not torch.equal(seen, dm.train_set.data[:96])  # shuffled
    assert [len(b) for b in dm.val_dataloader()] == [100, 100, 50]
    assert [len(b) for b in dm.test_dataloader()] == [30]
    # same seed -> same order
    dm2 = registry.build("dataset", "rings", batch_size=32, train_size=100, seed=5)
    assert torch.equal(next(iter(dm2.train_dataloader())), batches[0])
    info = describe(dm)
    assert info["train"] == 100 and info["val"] == 250 and info["shape"] == [2]


def test_loader_with_worker_processes():
    dm = registry.build("dataset", "two_moons", batch_size=16, train_size=64, num_workers=1)
    xs = list(dm.train_dataloader())
    assert len(xs) == 4 and all(x.shape == (16, 2) and x.dtype == torch.float32 for x in xs)


def test_flip_translate_flips_and_shifts():
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.int64).reshape(2, 3, 5, 6).to(torch.uint8)
    x = x.repeat(64, 1, 1, 1)
    out = RandomFlipTranslate(flip=True, translate=0)(x)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert out.dtype == torch.uint8
    assert bool((flipped | same).all()) and 10 < int(flipped.sum()) < 118
    g = torch.Generator().manual_seed(0)
    shifted = RandomFlipTranslate(flip=False, translate=1, generator=g)(x)
    # every image equals an edge-padded copy of its source shifted by (dy, dx) in {-1, 0, 1}^2
    padded = torch.nn.functional.pad(x.float(), (1, 1, 1, 1), mode="replicate")
    H, W = x.shape[-2:]
    found = set()
    for b in range(len(x)):
        ok = [
            (dy, dx)
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if torch.equal(
                padded[b, :, 1 + dy : 1 + dy + H, 1 + dx : 1 + dx + W], shifted[b].float()
            )
        ]
        assert ok, f"image {b} is not a 1-pixel translation"
        found.update(ok)
    assert len(found) >= 6  # several distinct shifts occur
    with pytest.raises(ValueError, match="B, C, H, W"):
        RandomFlipTranslate()(x[0])


def test_lightning_trainer_uses_the_module(tmp_path):
    import pytorch_lightning as pl

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))
            self.shapes = []

        def training_step(self, x, _):
            self.shapes.append((tuple(x.shape), x.dtype))
            return ((x - self.w) ** 2).mean()

        def validation_step(self, x, _):
            self.log("val", ((x - self.w) ** 2).mean())

        def test_step(self, x, _):
            self.log("test", ((x - self.w) ** 2).mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = registry.build("dataset", "eight_gaussians", batch_size=16, train_size=64, val_size=32,
                        test_size=32)  # fmt: skip
    model = Tiny()
    trainer = pl.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path), accelerator="cpu",
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert model.shapes == [((16, 2), torch.float32)] * 4
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    assert result["test"] > 0


def test_epoch_shuffle_sampler_resumable():
    from survae.data.base import EpochShuffleSampler

    s = EpochShuffleSampler(50, seed=1)
    first, second = list(s), list(s)  # plain loops: the epoch advances by itself
    assert sorted(first) == list(range(50)) and first != second
    resumed = EpochShuffleSampler(50, seed=1)
    resumed.set_epoch(1)  # what Lightning does when resuming at epoch 1
    assert list(resumed) == second and list(resumed) == second  # fixed while epoch is given
    other = EpochShuffleSampler(50, seed=2)
    assert list(other) != first


def test_epoch_shuffle_sampler_shards_and_resumes_per_rank(monkeypatch):
    """Under DDP each rank takes its share of one epoch order, and a resume skips that rank's
    examples; Lightning keeps the sampler (it is a DistributedSampler) rather than wrapping it."""
    from torch.utils.data import DistributedSampler

    from survae.data.base import EpochShuffleSampler

    assert isinstance(EpochShuffleSampler(10), DistributedSampler)
    whole = list(EpochShuffleSampler(11, seed=4))
    shards = []
    for rank in range(2):
        monkeypatch.setattr(EpochShuffleSampler, "_replicas", staticmethod(lambda r=rank: (2, r)))
        s = EpochShuffleSampler(11, seed=4)
        assert len(s) == 6
        shards.append(list(s))
        resumed = EpochShuffleSampler(11, seed=4)
        resumed.resume_at(0, 4)
        assert list(resumed) == shards[-1][4:]  # the rank's own examples already trained
    padded = whole + whole[:1]  # padded to 12 as DistributedSampler pads
    assert shards == [padded[0::2], padded[1::2]]
    assert sorted(set(shards[0]) | set(shards[1])) == list(range(11))
