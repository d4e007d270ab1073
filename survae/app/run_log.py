"""A run's log file holds what the run printed.

Hydra's job log (``<run folder>/cli.log``) only receives Python ``logging`` records, and survae,
Lightning's warnings and the progress lines print to stdout and stderr: the file stayed empty,
and in a sweep the output was only in submitit's own files. :func:`tee_output` copies both
streams into the run's log for the duration of the run. Live redraws of a terminal progress bar
(cursor movements, carriage returns) are left out of the file and colour codes stripped, so the
file reads as plain lines; the terminal gets everything unchanged.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections.abc import Iterator
from typing import Any, TextIO

#: colour and style codes (kept out of the file)
_STYLE = re.compile(r"\x1b\[[0-9;]*m")
#: cursor movement, line erasing, hidden cursor: a live display redrawing itself
_REDRAW = re.compile(r"\x1b\[[0-9;?]*[ABCDEFGHJKSTfhl]|\r(?!\n)")


class TeeStream(io.TextIOBase):
    """Writes go to ``stream`` and, as plain text, to ``log``; everything else (``isatty``,
    ``fileno``, ``encoding``) is the stream's, so libraries see the terminal they would."""

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        if text and not _REDRAW.search(text):
            with contextlib.suppress(OSError, ValueError):  # a full disk must not stop a run
                self._log.write(_STYLE.sub("", text))
        return len(text) if written is None else written

    def flush(self) -> None:
        self._stream.flush()
        with contextlib.suppress(OSError, ValueError):
            self._log.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _is_rank_zero() -> bool:
    keys = ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK")
    return all(int(os.environ.get(k) or 0) == 0 for k in keys)


@contextlib.contextmanager
def tee_output(path: str | os.PathLike) -> Iterator[None]:
    """Copy stdout and stderr into ``path`` (appended: a resumed run adds to its log) while
    the block runs; only in the global rank 0 process (the others would interleave)."""
    if not _is_rank_zero():
        yield
        return
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    with open(path, "a", buffering=1, encoding="utf-8") as log:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = TeeStream(out, log), TeeStream(err, log)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = out, err
