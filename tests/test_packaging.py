"""Packaging: public classes at the subpackages' top level, license and version metadata, the
lock file, and (slow) a built wheel that installs and finds its configs outside the checkout."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import survae
from survae import registry

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = ROOT / "requirements-lock.txt"


@pytest.mark.parametrize("kind", ["layer", "network", "distribution", "dataset"])
def test_every_registered_class_is_exported_by_its_subpackage(kind):
    missing = []
    for name in registry.available(kind):
        obj = registry.get(kind, name)
        if not isinstance(obj, type):
            continue
        package = ".".join(obj.__module__.split(".")[:2])  # e.g. survae.transforms
        module = importlib.import_module(package)
        if getattr(module, obj.__name__, None) is not obj or obj.__name__ not in module.__all__:
            missing.append(f"{package}.{obj.__name__} ({kind} {name!r})")
    assert not missing, "add to the subpackage's __init__.py and __all__: " + ", ".join(missing)


def test_short_import_paths_of_the_readme():
    from survae.distributions import StandardNormal
    from survae.nn import MLP
    from survae.transforms import AbsSurjection, AffineCoupling

    assert registry.get("layer", "affine_coupling") is AffineCoupling
    assert registry.get("layer", "abs") is AbsSurjection
    assert registry.get("distribution", "standard_normal") is StandardNormal
    assert registry.get("network", "mlp") is MLP


def test_every_name_in_all_exists():
    for package in ("survae", "survae.transforms", "survae.distributions", "survae.nn",
                    "survae.architectures", "survae.data"):  # fmt: skip
        module = importlib.import_module(package)
        absent = [name for name in module.__all__ if not hasattr(module, name)]
        assert not absent, f"{package}.__all__ names what it does not define: {absent}"


def test_license_metadata_is_an_spdx_string_with_the_file():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "the survae developers" in text
    # SPDX `license` needs setuptools >= 77; the build must not ask for an older one
    build_req = next(Requirement(r) for r in PYPROJECT["build-system"]["requires"]
                     if r.startswith("setuptools"))  # fmt: skip
    assert not build_req.specifier.contains("76.9") and build_req.specifier.contains("77.0")


def test_version_has_one_source():
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "survae.__version__"}
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", survae.__version__)


def test_python_m_survae_version():
    out = subprocess.run(
        [sys.executable, "-m", "survae", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"survae {survae.__version__}, Python ")
    assert "torch " in out.stdout


def test_configs_ship_inside_the_package():
    link = ROOT / "survae" / "configs"
    assert link.is_symlink() and link.resolve() == (ROOT / "configs").resolve()
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["survae"]
    assert "configs/**/*.yaml" in globs and "configs/*.yaml" in globs


def _lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_lock_file_pins_every_dependency_within_its_range():
    pins = _lock_pins()
    assert LOCK.read_text().startswith("#"), "the lock file starts with how it was made"
    reqs = list(PYPROJECT["project"]["dependencies"])
    for extra in ("dev", "cluster"):
        reqs += PYPROJECT["project"]["optional-dependencies"][extra]
    for text in reqs:
        req = Requirement(text)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"{req.name} is not pinned in {LOCK.name}"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{LOCK.name} pins {req.name}=={pins[name]}, outside pyproject's {req.specifier}"
        )
    assert "survae" not in pins, "the project itself is installed from the checkout, not pinned"
    assert all("+" not in v for v in pins.values()), "local versions (+cpu) do not resolve on GPUs"


def test_lock_file_matches_this_environment():
    """The pins are the tested environment: every pinned package is installed at that version
    (skipped in an environment that was not installed from the lock file)."""
    pins = _lock_pins()
    differ = []
    for name, version in pins.items():
        try:
            installed = metadata.version(name).split("+")[0]
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            differ.append(f"{name}: lock {version}, installed {installed}")
    if differ and not os.environ.get("SURVAE_CHECK_LOCK"):
        pytest.skip("this environment differs from the lock file: " + "; ".join(differ[:5]))
    assert not differ, differ


# --------------------------------------------------------------------------------------------
# a built wheel in a fresh virtual environment (no download: build without isolation, install
# without dependencies, and see this environment's packages through a .pth file)
# --------------------------------------------------------------------------------------------


def _copy_checkout(dest: Path) -> Path:
    skip = {".venv", ".git", "outputs", "multirun", "logs", "wandb", "data", "build", "dist"}
    shutil.copytree(
        ROOT,
        dest,
        symlinks=True,
        ignore=lambda d, names: [
            n for n in names
            if (Path(d) == ROOT and n in skip) or n.endswith(".egg-info") or n == "__pycache__"
        ],
    )  # fmt: skip
    return dest


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> tuple[Path, Path, str]:
    """``(wheel, venv bin folder, build log)`` of the checkout built and installed elsewhere."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = _copy_checkout(tmp / "src")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-v", "-w", str(tmp / "dist"), str(src)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    wheel = next((tmp / "dist").glob("survae-*.whl"))
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    env_python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(env_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # this environment's packages, after the fresh one's own (its survae comes first); a plain
    # folder in a .pth file: the editable checkout's finder (.pth code) is not run
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    Path(site, "zz_survae_test_deps.pth").write_text("\n".join(ours) + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env_python), "install", "--no-deps",
         "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    return wheel, env_dir / "bin", build.stdout + build.stderr


def _run_installed(bin_dir: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        capture_output=True, text=True, timeout=300, cwd=cwd, env=env,
    )  # fmt: skip


@pytest.mark.slow
def test_wheel_contents_and_clean_build(installed_wheel):
    import zipfile

    wheel, _, log = installed_wheel
    names = zipfile.ZipFile(wheel).namelist()
    configs = {n for n in names if n.startswith("survae/configs/")}
    expected = {
        "survae/configs/" + p.relative_to(ROOT / "configs").as_posix()
        for p in (ROOT / "configs").rglob("*.yaml")
    }
    assert expected and configs == expected
    assert "survae/nn/csrc/attention.cpp" in names  # speed.fused_attention builds it on use
    assert not any(n in ("run.py",) or n.startswith("tests/") for n in names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not re.search(r"deprecat", log, re.IGNORECASE), "the build printed deprecation warnings"


@pytest.mark.slow
def test_installed_commands_find_their_configs(installed_wheel, tmp_path):
    _, bin_dir, _ = installed_wheel
    code = "import survae.app.cli as c; print(c.__file__); print(c.config_dir())"
    where = _run_installed(bin_dir, ["python", "-c", code], tmp_path)
    assert where.returncode == 0, where.stderr[-3000:]
    module_file, config_dir = where.stdout.split()
    assert Path(module_file).is_relative_to(bin_dir.parent), "imported the checkout, not the wheel"
    assert Path(config_dir).is_relative_to(bin_dir.parent)
    version = _run_installed(bin_dir, ["survae", "--version"], tmp_path)
    assert version.returncode == 0 and version.stdout.startswith(f"survae {survae.__version__}")
    for command in ("survae-report", "survae-eval-loglik", "survae-eval-sample"):
        helped = _run_installed(bin_dir, [command, "--help"], tmp_path)
        assert helped.returncode == 0, helped.stderr[-3000:]
        assert helped.stdout.startswith(f"usage: {command}")
    empty = _run_installed(bin_dir, ["survae-report", str(tmp_path)], tmp_path)
    assert empty.returncode == 0 and "no published numbers" in empty.stdout, empty.stderr
    listed = _run_installed(bin_dir, ["survae-run", "--list-experiments"], tmp_path)
    assert listed.returncode == 0 and "abs_flow_four_circles" in listed.stdout, listed.stderr
    composed = _run_installed(
        bin_dir, ["survae-run", "experiment=abs_flow_corners", "--cfg", "job"], tmp_path
    )
    assert composed.returncode == 0, composed.stderr[-3000:]
    assert "corners" in composed.stdout and "Primary config directory" not in composed.stderr
