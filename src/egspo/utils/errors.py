"""Errors a user can fix (bad flag, bad data row, unwritable or full output location, an output another process is
writing): ``egspo`` prints them as one line, ``egspo <command>: error: <message>``, and exits with status 2.

Every message names what is wrong (file, line, field, flag or value). ``ValueError`` counts as a user error too: the
package's checks raise it with such messages.
"""

from __future__ import annotations

import errno
import os

#: errno values meaning "the file system is full" (ENOSPC) or "the user's quota is used up" (EDQUOT)
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class UserError(ValueError):
    """A problem with the input or the environment that the user can fix; the message says what and where."""


class DiskFullError(UserError, OSError):
    """A write failed because the file system (or the quota) is full; names the path being written."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(f"no space left on the device writing {os.fspath(path)} (nothing was left behind there)")
        self.path = os.fspath(path)


def is_disk_full(exc: BaseException) -> bool:
    """True for an ENOSPC / EDQUOT ``OSError``, and for the errors torch / safetensors raise from one (their messages
    carry the OS text: ``No space left on device``, ``os error 28``, ``Disk quota exceeded``)."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    text = str(exc)
    return any(marker in text for marker in ("No space left on device", f"os error {errno.ENOSPC}",
                                             "Disk quota exceeded"))


__all__ = ["DISK_FULL_ERRNOS", "DiskFullError", "UserError", "is_disk_full"]
