"""A FUSE filesystem whose files never answer a read: what an attacker mounts where a collector looks.

    python tests/support/fuse_stall.py MOUNTPOINT LOGFILE

One directory holding ``evil.desktop`` (4 KiB by its attributes). Every operation is appended to
LOGFILE as it arrives; ``read`` then waits for ever, so the reader sits in the kernel (D state)
until this server dies. Run by tests (fusepy over libfuse2), killed by them.
"""

from __future__ import annotations

import errno
import stat
import sys
import threading
import time

from fuse import FUSE, FuseOSError, Operations

NAME = "evil.desktop"
SIZE = 4096


class Stall(Operations):
    def __init__(self, log: str):
        self.log = log
        self.lock = threading.Lock()

    def _note(self, op: str, path: str) -> None:
        with self.lock, open(self.log, "a", encoding="utf-8") as fh:
            fh.write(f"{op} {path}\n")

    def getattr(self, path, fh=None):  # noqa: ANN001, ANN201
        self._note("getattr", path)
        now = time.time()
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, "st_atime": now, "st_mtime": now, "st_ctime": now}
        if path == "/" + NAME:
            return {"st_mode": stat.S_IFREG | 0o644, "st_nlink": 1, "st_size": SIZE, "st_atime": now,
                    "st_mtime": now, "st_ctime": now}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):  # noqa: ANN001, ANN201
        self._note("readdir", path)
        return [".", "..", NAME]

    def open(self, path, flags):  # noqa: ANN001, ANN201
        self._note("open", path)
        return 0

    def read(self, path, size, offset, fh):  # noqa: ANN001, ANN201
        self._note("read", path)
        threading.Event().wait()  # never answers


if __name__ == "__main__":
    FUSE(Stall(sys.argv[2]), sys.argv[1], foreground=True, nothreads=False, ro=True, subtype="stall",
         fsname="stall", allow_other=True, direct_io=True)
