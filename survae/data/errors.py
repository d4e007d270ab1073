"""Errors raised by the data modules, with messages saying where we looked and what to do."""

from __future__ import annotations

import http.client
import os
import urllib.error
from collections.abc import Iterable


class DatasetNotFoundError(FileNotFoundError):
    """The files of a data set are not where the data module looks for them.

    The message names every path that was looked at and how to get the data (a
    ``data.download=true`` run, a helper in :mod:`survae.data.fetch`, or a manual download).
    """

    def __init__(self, dataset: str, missing: Iterable[str | os.PathLike], how_to_get: str):
        self.dataset = dataset
        self.missing = [str(p) for p in missing]
        self.how_to_get = how_to_get
        listed = "\n".join(f"  - {p}" for p in self.missing)
        super().__init__(
            f"Data set {dataset!r} not found. Looked for:\n{listed}\nHow to get it: {how_to_get}"
        )

    def __str__(self) -> str:  # FileNotFoundError would print (errno, message) otherwise
        return self.args[0]


class DatasetCorruptedError(RuntimeError):
    """Files exist but are not what the loader expects (bad checksum, header or layout)."""


class UnsafePickleError(DatasetCorruptedError):
    """A data pickle names a Python object outside its format's allow-list: loading it could
    run code, so it is refused (the message names the file and the refused ``module.name``)."""


def is_download_failure(err: BaseException) -> bool:
    """Whether ``err`` is a failed download: no network, a refused or reset connection, a
    timeout, an HTTP error, or torchvision's "Error downloading" after all its mirrors failed
    (a :class:`DatasetNotFoundError` or a full disk is not)."""
    if isinstance(err, urllib.error.URLError | http.client.HTTPException):
        return True
    if isinstance(err, ConnectionError | TimeoutError):
        return True
    return isinstance(err, RuntimeError) and str(err).startswith("Error downloading")


def flat_reason(err: BaseException) -> str:
    """The reason of a failed download in one line (``URLError`` wraps it in ``reason``)."""
    reason = getattr(err, "reason", None) or err
    return " ".join(str(reason).split()) or type(err).__name__
