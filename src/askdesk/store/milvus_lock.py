"""Who holds a Milvus Lite file, and waiting out the engine an askdesk process left when it died.

Milvus Lite runs its engine (the ``milvus`` binary) as a child of the process that opens the file,
and two locks keep the file to that one process: the opener holds a POSIX lock on ``.NAME.lock``
beside the file (milvus_lite.server), which the engine waits for so that it stops when its opener
is gone; and the engine holds SQLite's lock on the file itself while it writes. A process killed
with SIGKILL (``kill -9``, alone or with its process group) leaves its engine behind for a moment:
still finishing a write, or still exiting, with SQLite's lock held. An engine started then stops at
once ("database is locked"), and pymilvus says only "Open local milvus failed"; one started while
the old one holds no lock runs beside it. So before an engine is started, `wait_until_free` asks
who holds each lock (`F_GETLK`) and, on Linux, which engines serve the file (their command line): an
engine whose opener is gone is waited for (it is stopping), a live opener is reported at once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

from ..errors import IndexLockedError

logger = logging.getLogger(__name__)

ORPHAN_WAIT_S = 30.0  # an engine left behind stops within milliseconds; seconds on a loaded machine
POLL_S = 0.02
ENGINE = "milvus"  # the engine's process name (milvus_lite/lib/milvus)
# struct flock, as F_GETLK fills it: (its format, where l_type and l_pid are in it), on 64-bit systems
_FLOCK = {"linux": ("hhqqi4x", 0, 4), "darwin": ("qqihh", 3, 2)}


def lock_file(path: Path) -> Path:
    """The file milvus_lite.server locks beside a Milvus Lite file."""
    return path.parent / f".{path.name}.lock"


def holder(path: Path) -> int | None:
    """The pid of a process holding a POSIX lock on ``path`` (0: held, by a process this one
    cannot name, as one in another pid namespace), or None when none is held.

    Never ask about a file this process locks itself: closing the probe would release its lock."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, IsADirectoryError):
        return None
    try:
        layout = _FLOCK.get(sys.platform) if struct.calcsize("P") == 8 else None
        if layout is None:  # a struct flock not known here: whether it is held, not by whom
            return _held(fd)
        fmt, at_type, at_pid = layout
        ask = [0] * 5
        ask[at_type] = fcntl.F_WRLCK  # whence, start and len 0: the whole file
        got = struct.unpack(fmt, fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(fmt, *ask)))
        return None if got[at_type] == fcntl.F_UNLCK else max(int(got[at_pid]), 0)
    finally:
        os.close(fd)


def _held(fd: int) -> int | None:
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return 0
    fcntl.lockf(fd, fcntl.LOCK_UN)
    return None


def left_engine(pid: int) -> bool:
    """Whether ``pid`` is a Milvus Lite engine this process did not start (one exiting too: its
    name stays to the end)."""
    if pid <= 0:
        return False
    if Path("/proc/self").is_dir():
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False  # gone
    else:  # no /proc (macOS)
        try:
            out = subprocess.run(["ps", "-p", str(pid), "-o", "ppid=,comm="], capture_output=True, text=True,
                                 timeout=5).stdout.split(None, 1)
            parent, comm = int(out[0]), os.path.basename(out[1].strip())
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return False
    return comm == ENGINE and parent != os.getpid()


def engines(path: Path) -> list[int]:
    """The Milvus Lite engines this process did not start that serve ``path``, by their command
    line (they hold no lock while idle, or between their opener's death and their own exit).
    Linux only: [] elsewhere."""
    if not Path("/proc/self").is_dir():
        return []
    want, found = str(path.resolve()).encode(), []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if Path(f"/proc/{name}/comm").read_bytes().strip() != ENGINE.encode():
                continue
            argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[1] == want and left_engine(int(name)):
            found.append(int(name))
    return found


def wait_until_free(path: Path, *, wait: float | None = None) -> int | None:
    """Wait until no engine left by a dead process holds the Milvus Lite file ``path``.

    Returns:
        None when no other process holds the file; else the pid of the live process holding it (the
        process that has it open, or whatever else locks it; 0 when this process cannot name it).

    Raises:
        IndexLockedError: an engine whose opener is gone still holds it after ``wait`` seconds
            (default `ORPHAN_WAIT_S`): stopped, or hung.
    """
    wait = ORPHAN_WAIT_S if wait is None else wait
    deadline = time.monotonic() + wait
    waiting = False
    while True:
        # The opener holds the lock file while it lives; an engine holds it only once its opener is gone.
        opener, engine = holder(lock_file(path)), holder(path)
        for pid in (opener, engine):
            if pid is not None and not left_engine(pid):
                return pid  # a live process has it open (or something else locks the file)
        left = [pid for pid in (opener, engine) if pid is not None] or engines(path)
        if not left:
            if waiting:
                logger.info("the engine left holding %s has stopped", path)
            return None
        pid = left[0]
        if time.monotonic() >= deadline:
            raise IndexLockedError(
                f"the Milvus Lite file {str(path)!r} is still held by a Milvus Lite engine (pid {pid}) whose askdesk "
                f"process is gone, {wait:.0f} s after it was found: that engine is not stopping; end it with "
                f"`kill {pid}` (`kill -9 {pid}` if it stays) and run again")
        if not waiting:
            logger.info("waiting for the Milvus Lite engine (pid %d) of a process that is gone to let go of %s",
                        pid, path)
            waiting = True
        time.sleep(POLL_S)
