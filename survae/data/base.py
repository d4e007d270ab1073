"""Common machinery of the data modules: the :class:`FlowDataModule` base and array data sets.

Every data module yields batches that are a single tensor ``x`` (labels are dropped, unless
``conditional=True``: then batches are ``(x, context)``, see :class:`FlowDataModule`):
images as ``uint8`` ``[B, C, H, W]`` (dequantization happens in the model, on the device),
point sets, tabular and toy data as ``float32``. Attributes describing the data (``kind``,
``shape``, ``num_bins``, ``name``) are available right after construction, so a model can be
built before :meth:`FlowDataModule.setup` runs.

Data sets are held as in-memory (or memory-mapped) arrays and fetched a whole batch at a time
through ``__getitems__`` (one indexing operation per batch instead of one per example), which
matters for small examples such as 2-D points.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from survae.data.errors import flat_reason, is_download_failure
from survae.errors import DownloadError

KINDS = ("image", "points", "tabular", "toy", "target")


class ArrayDataset(Dataset):
    """Examples ``data[indices[i]]`` of a tensor or (memory-mapped) numpy array.

    Args:
        data: all examples, first dimension indexes them (a ``torch.Tensor`` or ``np.ndarray``,
            e.g. a ``np.memmap``; numpy arrays are converted per batch, so a memory map is
            never read whole).
        indices: optional subset (e.g. a train/validation split) as integer indices.
        transform: optional batched transform applied to a ``[B, ...]`` tensor (augmentation).
        context: optional per-example context aligned with ``data`` (e.g. one-hot labels);
            when given, a batch is the pair ``(x, context)`` (conditional density estimation).
    """

    def __init__(
        self,
        data: torch.Tensor | np.ndarray,
        indices: Sequence[int] | np.ndarray | torch.Tensor | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        context: torch.Tensor | None = None,
    ):
        self.data = data
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)
        self.transform = transform
        self.context = context

    def __len__(self) -> int:
        return len(self.data) if self.indices is None else len(self.indices)

    # A memory map is pickled (e.g. for spawned DataLoader workers) as its file name and
    # reopened on the other side, instead of being copied whole.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        data = self.data
        if isinstance(data, np.memmap) and isinstance(data.base, mmap.mmap) and data.filename:
            state["data"] = ("memmap", data.filename, data.offset, data.shape, data.dtype.str)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        data = state["data"]
        if isinstance(data, tuple) and len(data) == 5 and data[0] == "memmap":
            _, filename, offset, shape, dtype = data
            state["data"] = np.memmap(filename, dtype=dtype, mode="r", offset=offset, shape=shape)
        self.__dict__.update(state)

    def _take(self, idx: np.ndarray) -> torch.Tensor:
        if self.indices is not None:
            idx = self.indices[idx]
        if isinstance(self.data, torch.Tensor):
            return self.data[torch.from_numpy(idx)]
        # Sorted reads are much faster on memory maps; restore the requested order afterwards.
        order = np.argsort(idx, kind="stable")
        batch = np.empty((len(idx),) + self.data.shape[1:], dtype=self.data.dtype)
        batch[order] = self.data[idx[order]]
        return torch.from_numpy(batch)

    def __getitems__(self, idx: Sequence[int]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(idx, dtype=np.int64)
        batch = self._take(idx)
        if self.transform is not None:
            # keyed transforms (augmentation) draw from the batch's own example indices
            keyed = getattr(self.transform, "keyed", False)
            batch = self.transform(batch, key=idx.tolist()) if keyed else self.transform(batch)
        if self.context is None:
            return batch
        rows = idx if self.indices is None else self.indices[idx]
        return batch, self.context[torch.from_numpy(rows)]

    def __getitem__(self, i: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        batch = self.__getitems__([i])
        return (batch[0][0], batch[1][0]) if isinstance(batch, tuple) else batch[0]


def collate(batch: torch.Tensor | tuple | Sequence) -> torch.Tensor | tuple:
    """Collate function: a batch fetched with ``__getitems__`` is already one tensor, or the
    pair ``(x, context)`` of a conditional data set; a list of single examples is stacked."""
    if isinstance(batch, (torch.Tensor, tuple)):
        return batch
    items = list(batch)
    if items and isinstance(items[0], tuple):
        return tuple(torch.stack(list(parts)) for parts in zip(*items))
    return torch.stack(items)


class EpochShuffleSampler(DistributedSampler):
    """Random order of ``range(n)`` fixed by ``(seed, epoch)``; under DDP each rank's share.

    Lightning calls :meth:`set_epoch` before every training epoch; without such calls (a
    plain ``for`` loop over the loader) the epoch advances by itself after each pass. A run
    resumed from a checkpoint calls :meth:`resume_at` with the position the checkpoint
    recorded: from then on the sampler counts epochs itself (Lightning's epoch counter is off
    by one after resuming an iteration-bounded run from an epoch-end checkpoint) and the first
    pass skips the part of the epoch that was already trained.

    In a distributed run (``torch.distributed`` initialised) every rank takes every
    ``world_size``-th index of the same epoch order, padded as ``DistributedSampler`` pads it,
    and the resume skip counts that rank's examples. It is a ``DistributedSampler`` so that
    Lightning keeps it instead of wrapping it in one of its own, whose position a resumed run
    could not restore.
    """

    def __init__(self, n: int, seed: int = 0):  # no process group needed (no super().__init__)
        self.n, self.seed, self.epoch = int(n), int(seed), 0
        self._epoch_given = False
        self._own_count = False
        self._skip = 0
        #: the epoch of the pass in progress (or last begun)
        self.current_epoch = 0

    def set_epoch(self, epoch: int) -> None:
        if not self._own_count:
            self.epoch, self._epoch_given = int(epoch), True

    def resume_at(self, epoch: int, num_consumed: int, epoch_done: bool = False) -> None:
        """Continue with ``epoch`` after its first ``num_consumed`` examples, or with the next
        epoch from its start when ``epoch_done``."""
        self.epoch = int(epoch) + 1 if epoch_done else int(epoch)
        self._skip = 0 if epoch_done else int(num_consumed)
        self._own_count = True

    @staticmethod
    def _replicas() -> tuple[int, int]:
        """``(world_size, rank)`` of the process group, ``(1, 0)`` outside one."""
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def __len__(self) -> int:
        world, _ = self._replicas()
        return -(-self.n // world)

    def __iter__(self) -> Iterator[int]:
        state = np.random.SeedSequence([self.seed, self.epoch]).generate_state(2)
        g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        order = torch.randperm(self.n, generator=g).tolist()
        world, rank = self._replicas()
        if world > 1:
            total = len(self) * world
            order = (order * (-(-total // self.n)))[:total][rank:total:world]
        order = order[self._skip :]
        self._skip = 0
        self.current_epoch = self.epoch
        if self._own_count or not self._epoch_given:
            self.epoch += 1
        return iter(order)


def split_indices(n: int, sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """Disjoint random index sets of the given sizes out of ``range(n)``; the rest comes last.

    The permutation depends only on ``n`` and ``seed``, so the split is fixed for a data set.
    """
    if any(s < 0 for s in sizes) or sum(sizes) >= n:
        raise ValueError(
            f"cannot carve splits of sizes {list(sizes)} out of {n} examples "
            "(at least one example must remain)"
        )
    perm = np.random.default_rng(seed).permutation(n)
    out, start = [], 0
    for s in sizes:
        out.append(np.sort(perm[start : start + s]))
        start += s
    out.append(np.sort(perm[start:]))
    return out


class FlowDataModule(pl.LightningDataModule):
    """Lightning data module of a density-estimation data set; batches are single tensors.

    Args:
        root: folder holding the data sets (each module documents its layout under it).
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes.
        download: fetch missing files in :meth:`prepare_data` (never otherwise).
        check_integrity: verify checksums/headers where the format allows.
        seed: seeds the training order: epoch ``e`` visits the examples in an order fixed by
            ``(seed, e)`` (see :class:`EpochShuffleSampler`), so resumed runs repeat it.
            Augmentation draws from torch's global generator (per worker: DataLoader seeds
            each worker from it), which ``pytorch_lightning.seed_everything`` seeds.
        data_seed: seeds everything that defines the data itself -- generated samples, the
            validation split carved out of a training set -- so it stays fixed when ``seed``
            changes between runs.
        pin_memory: DataLoader ``pin_memory`` (default: whether CUDA is available).
        drop_last: drop the last incomplete training batch (when there is more than one).
        conditional: yield ``(x, context)`` batches for conditional density estimation: the
            class as a one-hot float vector for labelled sets (``num_classes``), a context
            vector for sets that define one (``context_features``). Off by default: batches
            are ``x`` alone and the data set is unchanged.

    Class attributes set by subclasses: ``name`` (registered name), ``kind`` (one of
    ``"image"``, ``"points"``, ``"tabular"``, ``"toy"``), ``shape`` (one example's shape) and
    ``num_bins`` (number of discrete values per dimension for images, else ``None``).
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    shape: tuple[int, ...] = ()
    num_bins: int | None = None
    #: number of classes of a labelled data set (its conditional context is the one-hot class)
    num_classes: ClassVar[int | None] = None
    #: the classes' names, in label order (figures label their rows with them)
    class_names: ClassVar[tuple[str, ...] | None] = None
    #: size of the context vector of a data set with a continuous context
    context_features: ClassVar[int | None] = None

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        download: bool = False,
        check_integrity: bool = True,
        seed: int = 0,
        data_seed: int = 0,
        pin_memory: bool | None = None,
        drop_last: bool = True,
        conditional: bool = False,
    ):
        super().__init__()
        if conditional and self.num_classes is None and self.context_features is None:
            raise ValueError(
                f"data.conditional=true: data set {self.name!r} has no labels or context; "
                "conditional data sets: the labelled image sets (digits, mnist, fashion_mnist, "
                "cifar10), the context toys (gaussian_classes, rotated_moons) and the tabular "
                "sets with data.context_columns=[...]"
            )
        self.conditional = bool(conditional)
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ValueError(f"{self.name}: batch sizes must be positive")
        self.root = os.path.expanduser(str(root))
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.download = bool(download)
        self.check_integrity = bool(check_integrity)
        self.seed = int(seed)
        self.data_seed = int(data_seed)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.drop_last = bool(drop_last)
        self.shape = tuple(self.shape)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    # --- conditional data ---------------------------------------------------------------------
    @property
    def context_size(self) -> int | None:
        """Length of the context vector of a batch, or ``None`` when not conditional."""
        if not self.conditional:
            return None
        return self.context_features if self.context_features is not None else self.num_classes

    def one_hot(self, labels: np.ndarray | torch.Tensor | Sequence[int]) -> torch.Tensor | None:
        """``float32`` one-hot rows of integer ``labels`` when conditional, else ``None``
        (subclasses pass the result to :class:`ArrayDataset` as ``context``)."""
        if not self.conditional:
            return None
        labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        if labels.numel() and (labels.min() < 0 or labels.max() >= int(self.num_classes or 0)):
            raise ValueError(
                f"{self.name}: labels must lie in 0..{int(self.num_classes or 0) - 1}, got "
                f"{int(labels.min())}..{int(labels.max())}"
            )
        return torch.nn.functional.one_hot(labels, int(self.num_classes or 0)).float()

    def sample_contexts(self) -> torch.Tensor | None:
        """Contexts that sample figures show one row (or panel) each: every class for a
        labelled set; subclasses with a continuous context choose a few values."""
        if not self.conditional:
            return None
        return torch.eye(int(self.num_classes or 0))

    def sample_context_labels(self) -> list[str] | None:
        """What each of :meth:`sample_contexts` means, for the figures' row and panel labels:
        the class names of a labelled set (``class k`` without names); subclasses with a
        continuous context name their values."""
        contexts = self.sample_contexts()
        if contexts is None:
            return None
        names = self.class_names or tuple(f"class {k}" for k in range(int(self.num_classes or 0)))
        return [str(names[k]) if k < len(names) else f"class {k}" for k in range(len(contexts))]

    # --- hooks for subclasses -------------------------------------------------------------
    def _download(self) -> None:
        """Fetch the raw files into :attr:`root` (only called when ``download=True``)."""

    def _prepare(self) -> None:
        """Build caches derived from the raw files (single process, after downloading)."""

    def _load(self) -> tuple[Dataset, Dataset, Dataset]:
        """Return the train, validation and test data sets."""
        raise NotImplementedError

    # --- LightningDataModule API ----------------------------------------------------------
    def prepare_data(self) -> None:
        """Download (only when ``download=True``) and build caches; safe to call repeatedly
        (nothing to do once the splits are loaded). A failed download is a
        :class:`~survae.errors.DownloadError` naming the data set and the reason."""
        if self.train_set is not None:
            return
        if self.download:
            try:
                self._download()
            except (OSError, RuntimeError) as err:
                if not is_download_failure(err):
                    raise
                raise DownloadError(
                    f"data.download: downloading data set {self.name!r} into {self.root} "
                    f"failed ({flat_reason(err)}); check the network or proxy, or copy the "
                    f"files there by hand (see python -m survae.data.fetch --help)"
                ) from err
        self._prepare()

    def setup(self, stage: str | None = None) -> None:
        """Load all three splits once (``stage`` is accepted for Lightning and ignored)."""
        if self.train_set is None:
            self.train_set, self.val_set, self.test_set = self._load()

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        batch_size = self.batch_size if train else self.eval_batch_size
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=EpochShuffleSampler(len(dataset), self.seed) if train else None,
            drop_last=train and self.drop_last and len(dataset) > batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.test_set, train=False)

    # --- helpers --------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """A path under :attr:`root`."""
        return os.path.join(self.root, *parts)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, kind={self.kind!r}, shape={self.shape}, "
            f"num_bins={self.num_bins}, root={self.root!r}, batch_size={self.batch_size})"
        )


def describe(dm: FlowDataModule) -> dict[str, Any]:
    """Summary of a data module (for logging): name, kind, shape, bins and split sizes."""
    dm.setup()
    return {
        "name": dm.name,
        "kind": dm.kind,
        "shape": list(dm.shape),
        "num_bins": dm.num_bins,
        "train": len(dm.train_set),
        "val": len(dm.val_set),
        "test": len(dm.test_set),
    }
