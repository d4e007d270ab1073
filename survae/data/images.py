"""8-bit (and 17-level) image data sets: digits, MNIST, Fashion-MNIST, CIFAR-10.

Batches are ``uint8`` ``[B, C, H, W]``; dequantization is the model's job. Where a data set
has no validation split, a fixed random subset of ``val_size`` training images (seeded by
``data_seed``) is held out. Optional training augmentation (horizontal flip and integer
translation with edge padding, see :class:`~survae.data.augment.RandomFlipTranslate`) is
applied to training batches only. ``num_bits`` below the data's own (8) keeps that many most
significant bits of every pixel in every split (``num_bins`` becomes ``2^num_bits``, and the
model's dequantization and bits/dim follow it). ``binarize=True`` binarizes 8-bit images
dynamically (Salakhutdinov & Murray 2008): each training pixel is drawn as 1 with probability
``x / 255`` in every batch, validation and test images once with generators seeded by
``data_seed`` (the official SurVAE loader redraws those too, at every pass); ``num_bins`` is 2.

On-disk layouts under ``root`` (the same as torchvision's, so its downloads are found):

* ``mnist``: ``MNIST/raw/{train,t10k}-images-idx3-ubyte`` (``.gz`` also accepted)
* ``fashion_mnist``: ``FashionMNIST/raw/{train,t10k}-images-idx3-ubyte`` (``.gz`` accepted)
* ``cifar10``: ``cifar-10-batches-py/{data_batch_1..5,test_batch}`` (python pickles)
* ``digits``: none -- scikit-learn ships it.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from survae.data.augment import RandomFlipTranslate
from survae.data.base import ArrayDataset, FlowDataModule, split_indices
from survae.data.errors import DatasetCorruptedError, DatasetNotFoundError
from survae.data.io import CIFAR_GLOBALS, read_cifar_batch, read_idx, restricted_load
from survae.data.quantize import DynamicBinarize, ReduceBits, binarize_once, bits_of, chain
from survae.errors import python_command
from survae.registry import register


class ImageDataModule(FlowDataModule):
    """Base of the image data modules: uint8 batches, held-out validation, augmentation.

    Args:
        val_size: training images held out for validation (fixed by ``data_seed``).
        augment: augment training batches (random horizontal flip + translation).
        flip: include the horizontal flip when augmenting.
        translate: maximal shift in pixels when augmenting (0 disables translation).
        num_bits: quantize to ``2^num_bits`` levels (e.g. 5, as Glow's CelebA); ``None`` keeps
            the data's levels. Needs a power-of-two level count (not ``digits``).
        binarize: dynamic binarization of 8-bit images (see the module docstring).
        **kwargs: see :class:`~survae.data.base.FlowDataModule`.
    """

    kind = "image"
    num_bins = 256

    def __init__(
        self,
        val_size: int = 10_000,
        augment: bool = False,
        flip: bool = True,
        translate: int = 1,
        num_bits: int | None = None,
        binarize: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_bits = self._check_bits(num_bits)
        if self.num_bits is not None:
            self.num_bins = 2**self.num_bits
        self.binarize = bool(binarize)
        if self.binarize:
            if num_bits is not None or type(self).num_bins != 256:
                raise ValueError(
                    f"{self.name}: binarize=true needs 8-bit images and no num_bits, got "
                    f"{type(self).num_bins} levels and num_bits={num_bits}"
                )
            self.num_bins = 2
        if val_size < 1:
            raise ValueError(f"{self.name}: val_size must be positive, got {val_size}")
        self.val_size = int(val_size)
        self.augment = bool(augment)
        self.flip = bool(flip)
        self.translate = int(translate)

    def _check_bits(self, num_bits: int | None) -> int | None:
        if num_bits is None:
            return None
        full = bits_of(type(self).num_bins or 0)
        if full is None:
            raise ValueError(
                f"{self.name}: num_bits needs a power-of-two number of levels, the data has "
                f"{type(self).num_bins}"
            )
        if not 1 <= num_bits <= full:
            raise ValueError(f"{self.name}: num_bits must lie in [1, {full}], got {num_bits}")
        return int(num_bits)

    def quantize_transform(self) -> ReduceBits | None:
        """The ``num_bits`` quantization applied to every split, or ``None``."""
        full = bits_of(type(self).num_bins or 0)
        if self.num_bits is None or self.num_bits == full:
            return None
        return ReduceBits(full, self.num_bits)

    def train_transform(self) -> RandomFlipTranslate | None:
        """The augmentation applied to training batches, or ``None``."""
        if not self.augment or (not self.flip and self.translate == 0):
            return None
        return RandomFlipTranslate(flip=self.flip, translate=self.translate, seed=self.seed)

    def _split(
        self,
        train: torch.Tensor | np.ndarray,
        test: torch.Tensor | np.ndarray,
        train_labels: np.ndarray | None = None,
        test_labels: np.ndarray | None = None,
    ):
        """Hold ``val_size`` random training images out for validation; with
        ``conditional=True`` the one-hot labels go along as the context."""
        if self.val_size >= len(train):
            raise ValueError(
                f"{self.name}: val_size={self.val_size} but the training set has only "
                f"{len(train)} images"
            )
        val_idx, train_idx = split_indices(len(train), [self.val_size], self.data_seed)
        train_ctx = self.one_hot(train_labels) if train_labels is not None else None
        test_ctx = self.one_hot(test_labels) if test_labels is not None else None
        quantize = self.quantize_transform()
        train_transform = chain(self.train_transform(), quantize)
        if self.binarize:  # validation and test binarized once, training batches afresh
            train_transform = chain(DynamicBinarize(self.seed), self.train_transform())
            val_data = binarize_once(torch.as_tensor(train), self.data_seed)
            return (
                ArrayDataset(train, train_idx, transform=train_transform, context=train_ctx),
                ArrayDataset(val_data, val_idx, context=train_ctx),
                ArrayDataset(
                    binarize_once(torch.as_tensor(test), self.data_seed + 1), context=test_ctx
                ),
            )
        return (
            ArrayDataset(train, train_idx, transform=train_transform, context=train_ctx),
            ArrayDataset(train, val_idx, transform=quantize, context=train_ctx),
            ArrayDataset(test, transform=quantize, context=test_ctx),
        )

    def _check_shape(self, images: torch.Tensor | np.ndarray, source: str) -> None:
        if tuple(images.shape[1:]) != self.shape:
            raise DatasetCorruptedError(
                f"{self.name}: images in {source} have shape {tuple(images.shape[1:])}, "
                f"expected {self.shape}"
            )


@register("dataset", "digits")
class DigitsDataModule(ImageDataModule):
    """scikit-learn's 8x8 handwritten digits (1,797 images, 17 grey levels 0..16).

    Bundled with scikit-learn, so it works offline. Split at random (``data_seed``) into
    ``test_size`` test, ``val_size`` validation and the remaining training images.
    ``num_bins`` is 17.
    """

    name = "digits"
    shape = (1, 8, 8)
    num_bins = 17
    num_classes = 10
    class_names = tuple(str(k) for k in range(10))

    def __init__(self, val_size: int = 200, test_size: int = 297, **kwargs):
        super().__init__(val_size=val_size, **kwargs)
        if test_size < 1:
            raise ValueError(f"digits: test_size must be positive, got {test_size}")
        self.test_size = int(test_size)

    def _load(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        data = torch.from_numpy(digits.images.astype(np.uint8)).unsqueeze(1)  # 0..16
        test_idx, val_idx, train_idx = split_indices(
            len(data), [self.test_size, self.val_size], self.data_seed
        )
        ctx = self.one_hot(digits.target)  # None unless conditional
        return (
            ArrayDataset(data, train_idx, transform=self.train_transform(), context=ctx),
            ArrayDataset(data, val_idx, context=ctx),
            ArrayDataset(data, test_idx, context=ctx),
        )


def find_file(folder: str, name: str) -> str | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists first."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


@register("dataset", "mnist")
class MNISTDataModule(ImageDataModule):
    """MNIST (LeCun et al., 1998): 60k training and 10k test digits, 1x28x28, 8-bit.

    Reads the IDX image files in torchvision's layout ``ROOT/MNIST/raw/``; ``download=True``
    fetches them with torchvision. Validation: ``val_size`` (default 10,000) training images.
    """

    name = "mnist"
    shape = (1, 28, 28)
    num_classes = 10
    class_names = tuple(str(k) for k in range(10))
    folder = "MNIST"
    files = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
    #: read only with ``conditional=True`` (class labels as the context)
    label_files = {"train": "train-labels-idx1-ubyte", "test": "t10k-labels-idx1-ubyte"}

    @property
    def raw_folder(self) -> str:
        return self.path(self.folder, "raw")

    def how_to_get(self) -> str:
        return (
            "run with data.download=true (torchvision downloads it into "
            f"{self.raw_folder}), or put the IDX files {sorted(self.files.values())} "
            "(optionally .gz) there yourself."
        )

    def _files_present(self) -> bool:
        return all(find_file(self.raw_folder, f) for f in self.files.values())

    def _download(self) -> None:
        import torchvision

        cls = getattr(torchvision.datasets, self.folder)
        for train in (True, False):
            cls(self.root, train=train, download=True)

    def read_split(self, split: str) -> np.ndarray:
        """The ``uint8`` images ``(N, 1, 28, 28)`` of ``split`` ("train" or "test")."""
        path = find_file(self.raw_folder, self.files[split])
        if path is None:
            name = os.path.join(self.raw_folder, self.files[split])
            raise DatasetNotFoundError(self.name, [name, name + ".gz"], self.how_to_get())
        images = read_idx(path)
        if images.dtype != np.uint8 or images.ndim != 3:
            raise DatasetCorruptedError(
                f"{path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}"
            )
        images = images[:, None]
        self._check_shape(images, path)
        return images

    def read_labels(self, split: str, count: int) -> np.ndarray:
        """The class labels ``(N,)`` of ``split`` (IDX label file next to the images)."""
        path = find_file(self.raw_folder, self.label_files[split])
        if path is None:
            name = os.path.join(self.raw_folder, self.label_files[split])
            raise DatasetNotFoundError(self.name, [name, name + ".gz"], self.how_to_get())
        labels = read_idx(path)
        if labels.ndim != 1 or len(labels) != count:
            raise DatasetCorruptedError(
                f"{path}: expected {count} labels (N,), got shape {labels.shape}"
            )
        return labels.astype(np.int64)

    def _load(self):
        train = torch.from_numpy(self.read_split("train"))
        test = torch.from_numpy(self.read_split("test"))
        if not self.conditional:
            return self._split(train, test)
        labels = (self.read_labels("train", len(train)), self.read_labels("test", len(test)))
        return self._split(train, test, *labels)


@register("dataset", "fashion_mnist")
class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST (Xiao et al., 2017): 60k/10k 1x28x28 8-bit clothing images.

    Layout ``ROOT/FashionMNIST/raw/`` (torchvision's). Offline, Debian's
    ``dataset-fashion-mnist`` package provides the files; see :mod:`survae.data.fetch`.
    """

    name = "fashion_mnist"
    folder = "FashionMNIST"
    class_names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")  # fmt: skip

    def how_to_get(self) -> str:
        return (
            super().how_to_get() + " Offline: `apt-get install dataset-fashion-mnist`, then "
            f"`{python_command()} -m survae.data.fetch fashion_mnist --root {self.root}` (gunzips "
            f"/usr/share/datasets/fashion-mnist/*.gz into {self.raw_folder})."
        )


@register("dataset", "cifar10")
class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 (Krizhevsky, 2009): 50k training and 10k test colour images, 3x32x32, 8-bit.

    Reads the python pickles in ``ROOT/cifar-10-batches-py/``. With ``check_integrity`` the
    files' MD5 sums are compared with the official ones (torchvision's list) first; turn it
    off to read other files of the same format. Validation: ``val_size`` (default 5,000)
    training images. Training augmentation on by default as in SurVAE: random horizontal flip
    and a translation of up to ``translate`` = 1 pixel (about 4 %) with edge padding.
    """

    name = "cifar10"
    shape = (3, 32, 32)
    num_classes = 10
    class_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")  # fmt: skip
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)

    def __init__(self, val_size: int = 5_000, augment: bool = True, **kwargs):
        super().__init__(val_size=val_size, augment=augment, **kwargs)

    def how_to_get(self) -> str:
        return (
            "run with data.download=true (torchvision downloads and unpacks "
            f"cifar-10-python.tar.gz into {self.root}), or unpack that archive there yourself."
        )

    def _download(self) -> None:
        import torchvision

        for train in (True, False):
            torchvision.datasets.CIFAR10(self.root, train=train, download=True)

    def _official_md5(self) -> dict[str, str]:
        import torchvision

        cls = torchvision.datasets.CIFAR10
        return dict(cls.train_list + cls.test_list)

    def _read(self, names: tuple[str, ...]) -> np.ndarray:
        folder = self.path(self.folder)
        paths = [os.path.join(folder, n) for n in names]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise DatasetNotFoundError(self.name, missing, self.how_to_get())
        if self.check_integrity:
            from torchvision.datasets.utils import check_integrity

            md5 = self._official_md5()
            for name, path in zip(names, paths):
                if not check_integrity(path, md5[name]):
                    raise DatasetCorruptedError(
                        f"cifar10: MD5 of {path} differs from the official file's. Delete the "
                        "folder and download again (data.download=true), or pass "
                        "check_integrity=false to read non-official files of this format."
                    )
        images = np.concatenate([read_cifar_batch(p) for p in paths], axis=0)
        self._check_shape(images, folder)
        return images

    def _read_labels(self, names: tuple[str, ...], count: int) -> np.ndarray:
        """Class labels of the batches ``names`` (their ``labels`` entries), in file order."""
        parts = []
        for name in names:
            path = self.path(self.folder, name)
            batch = restricted_load(path, CIFAR_GLOBALS, "CIFAR-10 python batch")
            labels = batch.get("labels") if isinstance(batch, dict) else None
            if labels is None:
                raise DatasetCorruptedError(f"{path}: not a CIFAR batch (no 'labels' entry)")
            parts.append(np.asarray(labels, dtype=np.int64).reshape(-1))
        labels = np.concatenate(parts)
        if len(labels) != count:
            raise DatasetCorruptedError(
                f"cifar10: {count} images but {len(labels)} labels in {self.path(self.folder)}"
            )
        return labels

    def _load(self):
        train = torch.from_numpy(self._read(self.train_files))
        test = torch.from_numpy(self._read(self.test_files))
        if not self.conditional:
            return self._split(train, test)
        train_labels = self._read_labels(self.train_files, len(train))
        return self._split(train, test, train_labels, self._read_labels(self.test_files, len(test)))
