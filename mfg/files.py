"""Files that hold GMP data outside the database engine's control: the SQLite database (with its WAL and
shared-memory files, which SQLite creates with the database file's permissions) and every backup copy and
checksum. They are readable and writable by their owner only (mode 0600), whatever the process's umask:
anyone else on the machine who could read them could copy the records, and anyone who could write them could
alter them outside the application (issue [3.5]).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

OWNER_ONLY = 0o600


def owner_only(path: Path) -> Path:
    """Create ``path`` empty with mode 0600 if it does not exist; otherwise take group and other access
    away from it. A file this process may not change (another owner's) is left as it is, with a warning:
    opening it read-only is still allowed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            try:
                path.chmod(mode & 0o700)
            except OSError as exc:
                log.warning("%s is mode %04o and cannot be made owner-only: %s", path, mode, exc)
    else:
        os.close(fd)
    return path
