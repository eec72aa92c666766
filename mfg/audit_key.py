"""The audit key ring: the secret that seals the audit trail's head, kept in the instance folder, never in
the database (``AUDIT_KEY_FILE``, default ``instance/audit.key``, mode 0600).

One key a line, ``<key id> <key as hex>``, oldest first (``domain.audit_chain.KeyRing``): the last key
seals, every key verifies the seals it made. ``flask --app mfg init`` creates the file with one key;
``flask --app mfg audit rotate-key`` appends a new one. A key is never removed: an older seal (a backup's
head) must stay verifiable.

The application hands the ring to the services through the session (``Database.init_app`` puts a
:class:`KeyFile` in the sessionmaker's ``info``): it is read on first use and again whenever the file
changes, so a running server seals with a rotated key at its next append.
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path

from .domain.audit_chain import KeyRing

KEYS_INFO = "audit_keys"  # the session.info key under which the services find the key ring (or its source)
KEY_BYTES = 32
_HEADER = ("# The audit trail's key ring (flask --app mfg init / audit rotate-key): keep it secret, back it up\n"
           "# apart from the database backups, never edit or remove a line. '<key id> <key as hex>', oldest first.\n")


class AuditKeyError(RuntimeError):
    """No usable audit key ring: GMP changes are refused until there is one (fail closed)."""


def _new_line(existing: KeyRing | None) -> tuple[str, str]:
    used = {key_id for key_id, _ in existing.keys} if existing else set()
    while True:
        key_id = f"k{len(used) + 1}-{secrets.token_hex(4)}"
        if key_id not in used:
            return key_id, KeyRing.line(key_id, secrets.token_bytes(KEY_BYTES))


def create_key_file(path: Path) -> bool:
    """Create the key ring with one key, mode 0600, if there is none. True if created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(_HEADER + _new_line(None)[1])
    return True


def read_key_ring(path: Path) -> KeyRing:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AuditKeyError(f"no audit key ring at {path}: run `flask --app mfg init` (or restore the instance "
                            "folder's key file from its backup)") from None
    try:
        return KeyRing.parse(text)
    except ValueError as exc:
        raise AuditKeyError(f"{path}: {exc}") from None


def rotate(path: Path) -> str:
    """Append a new key to the ring (it seals from now on); the new key's id. Written to a 0600 file
    beside it and renamed over it, so a crash leaves the old ring or the new one, never half of one."""
    ring = read_key_ring(path)
    key_id, line = _new_line(ring)
    partial = path.with_name(path.name + ".new")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        text = path.read_text(encoding="utf-8")
        handle.write(text if text.endswith("\n") else text + "\n")
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    return key_id


class KeyFile:
    """The key ring of one file, read on first use and again when the file changes (a rotation)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int, int], KeyRing] | None = None

    def __call__(self) -> KeyRing:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return read_key_ring(self.path)  # raises AuditKeyError naming the file
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if self._cached is None or self._cached[0] != stamp:
                self._cached = (stamp, read_key_ring(self.path))
            return self._cached[1]
