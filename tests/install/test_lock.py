"""The dependency lock (requirements/): it agrees with pyproject.toml, CI notices when it does not, and the
test environment is exactly what it pins."""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from mfg.config import RESOURCE_ROOT, RUN_LOCK
from mfg.domain import lockfile

LOCK_SCRIPT = RESOURCE_ROOT / "requirements" / "lock.py"
REQUIREMENTS = RESOURCE_ROOT / "requirements"


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    """``lock.py --check`` as CI runs it, before anything is installed: the bare interpreter, no site."""
    return subprocess.run([sys.executable, "-S", "-I", str(root / "requirements" / "lock.py"), "--check"],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """pyproject.toml and requirements/ in a folder of their own, to change without touching the project."""
    shutil.copy(RESOURCE_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(REQUIREMENTS, tmp_path / "requirements")
    return tmp_path


def test_the_lock_agrees_with_pyproject(copy):
    result = _check(copy)
    assert result.returncode == 0, result.stderr
    assert "agree with pyproject.toml" in result.stdout


def test_a_dependency_added_to_pyproject_without_make_lock_fails_the_check(copy):
    text = (copy / "pyproject.toml").read_text()
    (copy / "pyproject.toml").write_text(text.replace('"pypdf>=4",', '"pypdf>=4",\n    "requests>=2",'))
    result = _check(copy)
    assert result.returncode == 1
    assert "requirements/run.lock was made from another pyproject.toml" in result.stderr
    assert "run `make lock`" in result.stderr


def test_a_range_changed_in_pyproject_without_make_lock_fails_the_check(copy):
    text = (copy / "pyproject.toml").read_text()
    (copy / "pyproject.toml").write_text(text.replace('"sqlalchemy>=2.0.30,<2.2"', '"sqlalchemy>=2.0.30,<2.1"'))
    assert "requirements/test.lock was made from another pyproject.toml" in _check(copy).stderr


def test_a_lock_edited_by_hand_fails_the_check(copy):
    path = copy / "requirements" / "run.lock"
    version = lockfile.parse(path.read_text()).pins["flask"]
    path.write_text(path.read_text().replace(f"flask=={version}", "flask==3.0.0"))
    result = _check(copy)
    assert result.returncode == 1
    assert "requirements/run.lock was edited by hand" in result.stderr
    assert "run.lock pins flask==3.0.0 but test.lock" in result.stderr


def test_a_change_to_pyproject_that_installs_nothing_else_keeps_the_lock(copy):
    text = (copy / "pyproject.toml").read_text()
    (copy / "pyproject.toml").write_text(text.replace('description = "', 'description = "The '))
    assert _check(copy).returncode == 0


def test_the_products_reader_and_the_lock_script_read_the_same_pins_and_digests():
    sys.path.insert(0, str(REQUIREMENTS))
    try:
        import lock as script  # requirements/lock.py
    finally:
        sys.path.remove(str(REQUIREMENTS))
    for name in ("run.lock", "test.lock", "tools.lock"):
        text = (REQUIREMENTS / name).read_text()
        parsed = lockfile.parse(text)
        digests, body = script.split(text)
        assert parsed.pins == script.pins(body) and parsed.pins
        assert parsed.intact and digests["lock"] == script.body_digest(body)
        assert parsed.python == script.PYTHON_VERSION and parsed.platform == script.PLATFORM


def _requirements(pyproject: dict) -> list[Requirement]:
    project = pyproject["project"]
    return [Requirement(r) for r in (*project["dependencies"], *project["optional-dependencies"]["test"],
                                     *pyproject["build-system"]["requires"])]


def test_every_requirement_of_pyproject_is_pinned_within_its_range():
    pins = lockfile.parse((REQUIREMENTS / "test.lock").read_text()).pins
    for requirement in _requirements(tomllib.loads((RESOURCE_ROOT / "pyproject.toml").read_text())):
        name = lockfile.normalise(requirement.name)
        assert name in pins, f"{requirement} is not in requirements/test.lock"
        assert requirement.specifier.contains(pins[name],
                                              prereleases=True), f"{name}=={pins[name]} not in {requirement}"


def test_the_run_lock_is_the_test_lock_without_the_test_tools():
    run = lockfile.parse(RUN_LOCK.read_text()).pins
    test = lockfile.parse((REQUIREMENTS / "test.lock").read_text()).pins
    assert run.items() <= test.items()
    assert {"pytest", "playwright", "hypothesis"} <= test.keys() - run.keys()


def test_this_environment_is_exactly_the_test_lock():
    """`make install-test` installed every package of the lock at its version, on its Python and platform."""
    installed = {}
    for dist in importlib.metadata.distributions():
        installed.setdefault(lockfile.normalise(dist.metadata["Name"]), dist.version)
    lock = lockfile.parse((REQUIREMENTS / "test.lock").read_text())
    assert lockfile.differences(lock, installed, python=".".join(platform.python_version_tuple()[:2]),
                                machine=platform.machine(), system=platform.system()) == []


def test_differences_name_every_way_an_installation_departs_from_its_lock():
    lock = lockfile.parse((REQUIREMENTS / "run.lock").read_text())
    installed = dict(lock.pins)
    installed["itsdangerous"] = "2.1.2"
    del installed["flask"]
    found = lockfile.differences(lock, installed, python="3.12", machine="aarch64", system="Linux")
    assert found == ["Python 3.12 runs here; the lock was made and tested for Python 3.11",
                     "this is aarch64 Linux; the lock was made and tested for x86_64-unknown-linux-gnu",
                     f"flask {lock.pins['flask']} is not installed",
                     f"itsdangerous 2.1.2 is installed; the lock has {lock.pins['itsdangerous']}"]
    edited = lockfile.parse((REQUIREMENTS / "run.lock").read_text().replace("# ----\n", "# ----\n# a note\n"))
    assert lockfile.differences(edited, lock.pins, python="3.11", machine="x86_64", system="Linux") == [
        "the lock file was edited after `make lock` wrote it (its lock-sha256 does not match)"]


def test_the_dsa_deprecation_is_ignored_for_pyhanko_only():
    """Warnings are errors; the one third-party warning ignored is cryptography's DSA deprecation as pyHanko
    0.38 reports it at import, and nothing else: the same warning from any other module still raises."""
    quiet = subprocess.run([sys.executable, "-W", "error", "-c", "import mfg.reports.pdf"],
                           capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    other = subprocess.run([sys.executable, "-W", "error", "-c",
                            "import mfg.reports.pdf\n"
                            "from cryptography.hazmat.primitives.asymmetric.dsa import DSAPublicKey"],
                           capture_output=True, text=True, timeout=120)
    assert other.returncode == 1 and "DSA is deprecated" in other.stderr
    bare = subprocess.run([sys.executable, "-W", "error", "-c", "import pyhanko.sign.signers"],
                          capture_output=True, text=True, timeout=120)
    assert bare.returncode == 1 and "DSA is deprecated" in bare.stderr  # the filter is needed today
