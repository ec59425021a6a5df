"""What an installed wheel carries and where an installed package writes (the wheel itself is
built, installed and run by .ci/wheel-check.sh)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrec import config as config_module
from streamrec.backends.engine_cache import cache_dir
from streamrec.config import CONFIG_DIR, DEFAULT_CONFIG, PACKAGE_DIR, REPO_ROOT, labels_path, load_config, runtime_dir
from streamrec.procedural import DEMO_SEED, GENERATOR_VERSION, demo_video

tomllib = pytest.importorskip("tomllib")
PYPROJECT = REPO_ROOT / "pyproject.toml"
pytestmark = pytest.mark.skipif(not PYPROJECT.is_file(), reason="needs the checkout's pyproject.toml")


def setuptools_table() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]


def packaged_files(package: str) -> set[Path]:
    """The files the package-data globs of ``package`` match, as setuptools matches them."""
    table = setuptools_table()
    folder = REPO_ROOT / table.get("package-dir", {}).get(package, package.replace(".", "/"))
    return {path.resolve() for pattern in table["package-data"][package]
            for path in folder.glob(pattern) if path.is_file()}


def test_every_subpackage_is_listed_for_the_wheel():
    listed = set(setuptools_table()["packages"])
    on_disk = {".".join(init.parent.relative_to(REPO_ROOT).parts) for init in PACKAGE_DIR.rglob("__init__.py")}
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert "streamrec.configs" in listed


def test_the_checkouts_configs_folder_is_the_one_installed():
    assert setuptools_table()["package-dir"]["streamrec.configs"] == "configs"
    assert CONFIG_DIR == REPO_ROOT / "configs"
    assert {p.resolve() for p in CONFIG_DIR.glob("*.yaml")} <= packaged_files("streamrec.configs")


def test_the_wheel_carries_what_the_default_run_reads():
    config = load_config(DEFAULT_CONFIG)
    read = {Path(config.checkpoint).resolve(), labels_path(config.labels).resolve(),
            (PACKAGE_DIR / "weights" / "slowfast_tiny" / "config.yaml").resolve()}
    assert all(path.is_relative_to(PACKAGE_DIR) for path in read)
    assert read - packaged_files("streamrec") == set()


@pytest.fixture
def installed(tmp_path, monkeypatch) -> Path:
    """streamrec as a wheel installs it: no pyproject.toml beside the package; the user cache in tmp_path."""
    monkeypatch.setattr(config_module, "REPO_ROOT", tmp_path / "site-packages")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("STREAMREC_ENGINE_DIR", raising=False)
    return tmp_path / "cache" / "streamrec"


def test_from_a_checkout_run_time_files_stay_in_it(monkeypatch):
    monkeypatch.delenv("STREAMREC_ENGINE_DIR", raising=False)
    assert cache_dir() == runtime_dir("engines") == REPO_ROOT / "engines"
    assert runtime_dir("videos") == REPO_ROOT / ".cache"


def test_an_installed_package_writes_to_the_user_cache(installed, tmp_path, monkeypatch):
    assert cache_dir() == installed / "engines"
    cached = installed / "videos" / f"demo_{DEMO_SEED}_v{GENERATOR_VERSION}.mp4"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    cached.with_suffix(".json").write_text("[]")
    assert demo_video() == cached  # found there, not generated elsewhere
    monkeypatch.setenv("STREAMREC_ENGINE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_without_xdg_cache_home_the_user_cache_is_under_home(installed, tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert runtime_dir("engines") == tmp_path / "home" / ".cache" / "streamrec" / "engines"
