"""The fused attention kernel's compiled library runs code when loaded: survae loads it only
from its own folder that nobody else can write, and only the library it built there (SHA-256
recorded at build time). A planted library whose constructor writes a marker file is first
shown to run when loaded by anything else, then shown never to run through survae."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from survae.nn import fused_attention as FA

CC = shutil.which("gcc") or shutil.which("cc")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler to build the planted library")

PLANTED = """
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen(MARKER, "w");
    if (f) fclose(f);
}
"""


def _compile(source: str, out: Path, tmp_path: Path, marker: Path | None = None) -> Path:
    c = tmp_path / "lib.c"
    c.write_text(source)
    define = [f'-DMARKER="{marker}"'] if marker else []
    subprocess.run([CC, "-shared", "-fPIC", *define, "-o", str(out), str(c)], check=True)
    return out


@pytest.fixture
def kernel_dir(tmp_path, monkeypatch) -> Path:
    """survae's build folder for this machine's kernel, under a private temporary root."""
    monkeypatch.setenv(FA.DIR_ENV, str(tmp_path / "extensions"))
    FA.load_extension.cache_clear()
    yield FA.build_root() / f"survae_attention_{FA._build_tag()}"
    FA.load_extension.cache_clear()


@pytest.fixture
def planted(kernel_dir, tmp_path) -> tuple[Path, Path]:
    """A library with a marker-writing constructor where survae's kernel would be."""
    marker = tmp_path / "marker"
    elsewhere = _compile(PLANTED, tmp_path / "planted.so", tmp_path, marker)
    probe = f"import ctypes; ctypes.CDLL({str(elsewhere)!r})"
    subprocess.run([sys.executable, "-c", probe], check=True)
    assert marker.exists()  # loading it runs its code
    marker.unlink()
    FA.private_dir(FA.private_dir(FA.build_root()) / kernel_dir.name)
    library = kernel_dir / f"{kernel_dir.name}.so"
    shutil.copy(elsewhere, library)
    return library, marker


def _no_build(monkeypatch) -> list[str]:
    """Replace the compiler run by a stub that records the call (the real build is tested in
    tests/nn/test_fused_attention.py)."""
    calls: list[str] = []

    def build(name, folder, flags, openmp):
        calls.append(name)
        assert not list(folder.glob("*.so")), "the build must start from an empty folder"
        raise FA.FusedAttentionBuildError("stub build")

    monkeypatch.setattr(FA, "_build", build)
    return calls


def test_an_unrecorded_library_is_deleted_and_rebuilt_not_loaded(planted, monkeypatch):
    library, marker = planted
    calls = _no_build(monkeypatch)
    with pytest.warns(UserWarning, match="no build record"):
        with pytest.raises(FA.FusedAttentionBuildError, match="stub build"):
            FA.load_extension()
    assert calls and not library.exists()
    assert not marker.exists(), "the planted library ran"


def test_a_library_changed_after_its_build_is_refused(planted, kernel_dir, tmp_path, monkeypatch):
    library, marker = planted
    built = _compile("int survae_kernel = 1;\n", tmp_path / "built.so", tmp_path)
    flags, openmp = FA._compile_flags()
    shutil.copy(built, library)
    FA.record_build(kernel_dir, FA.build_key(flags + openmp), library)
    shutil.copy(tmp_path / "planted.so", library)  # swapped in after the build
    calls = _no_build(monkeypatch)
    with pytest.raises(FA.UnsafeExtensionError, match="planted or modified") as err:
        FA.load_extension()
    assert str(library) in str(err.value) and not calls
    assert not marker.exists(), "the planted library ran"
    record = json.loads((kernel_dir / FA.RECORD).read_text())
    assert record["library"] == library.name and len(record["sha256"]) == 64


def test_a_recorded_library_of_other_sources_is_rebuilt(planted, kernel_dir, monkeypatch):
    library, marker = planted
    FA.record_build(kernel_dir, "a key of other sources or another compiler", library)
    calls = _no_build(monkeypatch)
    with pytest.warns(UserWarning), pytest.raises(FA.FusedAttentionBuildError, match="stub"):
        FA.load_extension()
    assert calls and not library.exists() and not marker.exists()


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o722])
def test_a_build_folder_others_can_write_is_refused(tmp_path, monkeypatch, mode):
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(mode)
    monkeypatch.setenv(FA.DIR_ENV, str(root))
    FA.load_extension.cache_clear()
    try:
        with pytest.raises(FA.UnsafeExtensionError, match="writable by other users"):
            FA.load_extension()
    finally:
        FA.load_extension.cache_clear()
    assert list(root.iterdir()) == []  # nothing built or loaded there


def test_a_folder_of_another_user_or_below_an_open_folder_is_refused(tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    FA.private_dir(mine)
    assert (mine.stat().st_mode & 0o777) == 0o700
    uid = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: uid + 1)
    with pytest.raises(FA.UnsafeExtensionError, match="owned by user id"):
        FA.private_dir(mine)
    monkeypatch.undo()
    open_parent = tmp_path / "open"
    open_parent.mkdir()
    open_parent.chmod(0o777)  # anyone could rename the build folder away and plant another
    with pytest.raises(FA.UnsafeExtensionError, match="above the build folder"):
        FA.private_dir(open_parent / "ext")
    open_parent.chmod(0o1777)  # sticky, like /tmp: only the owner may rename its entries
    assert FA.private_dir(open_parent / "ext2").is_dir()
    link = tmp_path / "link"
    link.symlink_to(mine)
    with pytest.raises(FA.UnsafeExtensionError, match="not a folder"):
        FA.private_dir(link)


@pytest.mark.slow
def test_a_real_build_is_recorded_and_loaded_again_without_rebuilding(kernel_dir):
    if not shutil.which("ninja") or not any(shutil.which(c) for c in ("c++", "g++")):
        pytest.skip("no C++ compiler or ninja")
    FA.load_extension()
    record = json.loads((kernel_dir / FA.RECORD).read_text())
    library = kernel_dir / record["library"]
    assert FA._sha256(library) == record["sha256"]
    stamp = library.stat().st_mtime_ns
    code = "from survae.nn import fused_attention as FA; FA.load_extension(); print('ok')"
    env = {**os.environ, FA.DIR_ENV: os.environ[FA.DIR_ENV], "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
    assert library.stat().st_mtime_ns == stamp  # loaded as recorded, not rebuilt
