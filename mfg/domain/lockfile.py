"""The dependency lock as the installed product reads it: ``requirements/run.lock``, which ``make lock``
(``requirements/lock.py``) writes and the wheel carries. Pure: text in, facts and problems out.

The format, as lock.py writes it: a comment header with ``target-python``, ``target-platform``,
``pyproject-sha256`` and ``lock-sha256`` (the sha256 of everything after the ``# ----`` line), then uv's
``name==version`` lines with their hashes. lock.py reads the same header with its own few lines (it must
run before anything is installed); ``tests/install/test_lock.py`` holds the two readers equal on the real files.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)
_HEADER = re.compile(r"^# (target-python|target-platform|pyproject-sha256|lock-sha256): (\S+)$", re.MULTILINE)
_BODY_START = "# ----\n"


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them: ``Flask_WTF`` and ``flask-wtf`` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Lock:
    pins: dict[str, str]  # normalised name -> version
    python: str | None  # "3.11": the Python it was made and tested for
    platform: str | None  # "x86_64-unknown-linux-gnu"
    sha256: str  # of the whole file
    intact: bool  # its lock-sha256 matches its body: not edited since `make lock` wrote it


def parse(text: str) -> Lock:
    head, marker, body = text.partition(_BODY_START)
    header = dict(_HEADER.findall(head)) if marker else {}
    body = body if marker else text
    return Lock(pins={normalise(n): v for n, v in _PIN.findall(body)}, python=header.get("target-python"),
                platform=header.get("target-platform"), sha256=hashlib.sha256(text.encode()).hexdigest(),
                intact=bool(marker) and header.get("lock-sha256") == hashlib.sha256(body.encode()).hexdigest())


def differences(lock: Lock, installed: Mapping[str, str], *, python: str, machine: str,
                system: str) -> list[str]:
    """Every way this installation differs from ``lock``: a package missing or at another version, another
    Python or platform, a lock file edited by hand. ``installed`` maps normalised names to versions;
    ``python`` is "3.11", ``machine`` e.g. "x86_64", ``system`` e.g. "Linux"."""
    problems = []
    if not lock.intact:
        problems.append("the lock file was edited after `make lock` wrote it (its lock-sha256 does not match)")
    if lock.python is not None and python != lock.python:
        problems.append(f"Python {python} runs here; the lock was made and tested for Python {lock.python}")
    if lock.platform is not None:
        arch, _, rest = lock.platform.partition("-")
        if machine != arch or system.lower() not in rest:
            problems.append(f"this is {machine} {system}; the lock was made and tested for {lock.platform}")
    for name, version in sorted(lock.pins.items()):
        found = installed.get(name)
        if found is None:
            problems.append(f"{name} {version} is not installed")
        elif found != version:
            problems.append(f"{name} {found} is installed; the lock has {version}")
    return problems
