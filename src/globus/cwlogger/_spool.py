"""The durable spool: a crash-safe, bounded local store of the requests the
daemon did not acknowledge, kept until a :class:`~._replay.Replayer` sends
them.

How it works, and why:

- Each process writes its own append-only segment file,
  ``<pid>-<token>-<seq>.seg``, and holds an exclusive ``flock`` on it for as
  long as it may write to it.  Writers never share a file, so a writer killed
  in the middle of a record can only tear its own last frame (one file shared
  by two writers glued a killed writer's half record to the next one's).  The
  kernel releases the lock of a killed process, so a segment whose lock can
  be taken will never be written again: that is how a replayer knows it may
  claim it.  A segment is created under a hidden name, locked, and only then
  renamed into view, so nobody can claim it in between.  A forked child
  starts segments of its own (never unlocking its parent's: the lock belongs
  to the open file, which both share).
- One record is one frame, written with ONE ``pwrite``: a magic, the length,
  the CRC-32 of the bytes, and the bytes (the request exactly as the handler
  would have sent it, so that replay cannot change it).  A short write (a
  full disk returns one, with no error) is truncated back at once, so a torn
  frame is never followed by a good one.  The magic starts with a NUL byte,
  which JSON always escapes, so after a corrupt frame the reader finds the
  next one by searching for the magic.
- No ``fsync`` in the logging call: SIGKILL keeps the page cache, and only a
  power loss needs the data on disk, so a thread syncs it every
  ``sync_interval`` (0: every record, in the caller).
- The bound is on the bytes in the directory, from all its writers: the same
  thread measures them every second, and the writer adds what it wrote since.
  At the bound a record is refused at once, never waited for.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import struct
import threading
import time
import weakref
import zlib

TYPE_CHECKING = False  # without importing typing: see _typing.py
if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "FORK_LOCK",
    "Spool",
    "check_directory",
    "check_number",
    "claim",
    "directory_bytes",
    "frame",
    "frames",
    "parse_name",
    "read_checkpoint",
    "write_checkpoint",
]

MAGIC = b"\x00CWs"
HEADER = struct.Struct(">4sII")  # magic, length, CRC-32 of the request
MAX_REQUEST = 8 * 2**20  # a longer length is corruption (a request holds < 2 MiB)
SEGMENT, CHECKPOINT, DROPS, LOCK, QUARANTINE = ".seg", ".ack", ".drops", "replay.lock", "quarantine"
SCAN_INTERVAL = 1.0  # seconds between two measures of the directory
#: Held while a descriptor that takes a lock is opened and recorded (or
#: closed and forgotten), and across ``os.fork()``, so that a child knows
#: every such descriptor it inherits and closes it: ``flock`` belongs to the
#: open file, which a child shares, so a copy it kept would hold the lock for
#: as long as it lives.  Taken after a spool's own lock, never before.
FORK_LOCK = threading.RLock()
_DROPS_LINE = 48  # bytes of the drops file, rewritten in place: "dropped reported\n"


def frame(request: bytes) -> bytes:
    """The frame that holds one request (a JSON line: else ValueError, as
    replay would set it aside)."""
    if not (2 <= len(request) <= MAX_REQUEST and request[-1:] == b"\n"):
        msg = f"not a request: {request[:80]!r}"
        raise ValueError(msg)
    return HEADER.pack(MAGIC, len(request), zlib.crc32(request)) + request


def _whole(data: bytes, start: int) -> int:
    """The end of the whole, intact frame at ``start``, or 0."""
    if len(data) - start < HEADER.size:
        return 0
    magic, length, crc = HEADER.unpack_from(data, start)
    end = start + HEADER.size + length
    if magic != MAGIC or not 2 <= length <= MAX_REQUEST or end > len(data):
        return 0
    if data[end - 1] != 0x0A:  # every request ends with its newline
        return 0
    return end if zlib.crc32(memoryview(data)[start + HEADER.size : end]) == crc else 0


def frames(data: bytes, start: int = 0) -> Iterator[tuple[int, int, bytes | None]]:
    """``(start, end, request)`` for each frame in ``data`` from ``start``;
    ``request`` is None for bytes that are no whole frame: corrupt ones (a
    good frame follows) or a torn tail (``end == len(data)``)."""
    while start < len(data):
        end = _whole(data, start)
        if end:
            yield start, end, data[start + HEADER.size : end]
        else:
            end = data.find(MAGIC, start + 1)
            while end != -1 and not _whole(data, end):
                end = data.find(MAGIC, end + 1)
            end = len(data) if end == -1 else end
            yield start, end, None
        start = end


def parse_name(name: str) -> tuple[int, str, int] | None:
    """``(pid, token, seq)`` of a segment's file name, or None."""
    parts = name[: -len(SEGMENT)].split("-") if name.endswith(SEGMENT) else []
    if len(parts) != 3 or not (parts[0].isdigit() and parts[2].isdigit()):
        return None
    return int(parts[0]), parts[1], int(parts[2])


def claim(path: str) -> int | None:
    """A descriptor of ``path`` holding its exclusive lock, or None when a
    live process holds it (its writer, or a replayer) or it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_nlink:  # not deleted by whoever held it before us
            return fd
    except BlockingIOError:
        pass
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None


def read_checkpoint(path: str) -> tuple[int, int]:
    """``(acked, until)`` from a segment's checkpoint file: every record
    before offset ``acked`` was acknowledged, those before ``until`` may
    have been sent.  The last whole line counts; ``(0, 0)`` without one."""
    try:
        with open(path, "rb") as file:
            lines = file.read().split(b"\n")[:-1]
    except FileNotFoundError:
        return 0, 0
    for line in reversed(lines):
        fields = line.split()
        if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
            return int(fields[0]), max(int(fields[0]), int(fields[1]))
    return 0, 0


def write_checkpoint(path: str, acked: int, until: int) -> None:
    """Append one checkpoint line (unsynced: a kill keeps the page cache)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, b"%d %d\n" % (acked, until))
    finally:
        os.close(fd)


def check_directory(directory: str | os.PathLike[str]) -> str:
    """``directory`` as an absolute path, created if need be, owned by this
    process's user and private (mode 0700); a clear error otherwise."""
    given: object = os.fspath(directory) if isinstance(directory, os.PathLike) else directory
    if not isinstance(given, str):
        msg = f"spool must be a str or path, not {type(directory).__name__}: {directory!r}"
        raise TypeError(msg)
    if not os.path.isabs(given):
        msg = f"spool must be an absolute path: {given!r}"
        raise ValueError(msg)
    path = os.path.normpath(given)
    try:
        os.makedirs(path, 0o700, exist_ok=True)
        status = os.stat(path)
    except OSError as error:
        msg = f"spool directory cannot be created: {path!r}: {error.strerror}"
        raise ValueError(msg) from error
    if status.st_uid != os.geteuid():
        msg = f"spool directory {path!r} belongs to uid {status.st_uid}, not {os.geteuid()}"
        raise PermissionError(msg)
    try:
        if stat.S_IMODE(status.st_mode) != 0o700:
            os.chmod(path, 0o700)  # ours: make it private (systemd makes 0755)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "not writable")
    except OSError as error:
        msg = f"spool directory cannot be made private and writable: {path!r}: {error.strerror}"
        raise PermissionError(msg) from error
    return path


def directory_bytes(directory: str) -> int:
    """The bytes of the files in a spool directory, quarantine included."""
    total = 0
    for folder in (directory, os.path.join(directory, QUARANTINE)):
        with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
    return total


def check_number(
    name: str, value: object, low: float, high: float, kinds: tuple[type, ...] = (int, float)
) -> None:
    """A clear TypeError or ValueError unless ``low <= value <= high``."""
    if not isinstance(value, kinds) or isinstance(value, bool):
        msg = f"{name} must be a {kinds[-1].__name__}, not {type(value).__name__}: {value!r}"
        raise TypeError(msg)
    if not low <= value <= high:  # type: ignore[operator]  # a number, checked above
        msg = f"{name} must be from {low} to {high}: {value!r}"
        raise ValueError(msg)


class Spool:
    """The store of one spool directory, as this process writes it.

    :meth:`append` never raises and never waits for more than its one write;
    it returns whether the record is in the store.  Counters (per process):
    ``spooled``, records stored; ``dropped``, refused at the bound;
    ``failed``, not stored for any other reason (disk full, an error, after
    close), of which ``short_writes`` were cut short and truncated back.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 256 * 2**20,
        sync_interval: float = 0.1,
        segment_bytes: int = 4 * 2**20,
    ) -> None:
        check_number("max_bytes", max_bytes, 1, 2**62, (int,))
        check_number("segment_bytes", segment_bytes, 1, 2**62, (int,))
        check_number("sync_interval", sync_interval, 0, 3600)
        self.directory = check_directory(directory)
        self.max_bytes, self.segment_bytes = max_bytes, segment_bytes
        self.sync_interval = float(sync_interval)
        self._used = directory_bytes(self.directory)
        self._closed = False
        self._reset()
        _LIVE.add(self)

    def _reset(self) -> None:
        """The state of a process that has not written yet."""
        self.spooled = self.dropped = self.failed = self.short_writes = 0
        self._pid, self._token, self._seq = os.getpid(), os.urandom(4).hex(), 0
        self._lock = threading.RLock()  # re-entered only by a signal handler's logging
        self._writing = False
        self._fd, self._name, self._size = -1, "", 0  # the segment being written
        self._written = 0  # bytes, ever, for the bound between two measures
        self._dirty = self._new_segment = False
        self._retired: dict[int, tuple[str, bool]] = {}  # fd: segment, sync it first
        self._drops_fd, self._reported, self._drops_written = -1, 0, (0, 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def token(self) -> str:
        """Names this process's segments (``<pid>-<token>-<seq>.seg``)."""
        return self._token

    def append(self, request: bytes) -> bool:
        """Store one request (as :func:`protocol.encode_event` made it):
        True once it is in the store, False when it is not (counted)."""
        try:
            if self._pid != os.getpid():
                self.after_fork_in_child()
            data = frame(request)
            if self._closed:  # a record after close(): kept all the same
                self._reopen()
            if self._thread is None:
                self._start()  # it also measures the directory: the bound can clear
            with self._lock:
                if self._writing:  # a signal handler that logs, mid-write
                    self.failed += 1
                    return False
                self._writing = True
                try:
                    return self._append(data)
                finally:
                    self._writing = False
        except Exception:
            with self._lock:
                self.failed += 1
            return False

    def _reopen(self) -> None:
        """Open again after close(), for a record that came after it (from an
        exit hook, say): a new segment, and a sync thread of its own."""
        with self._lock:
            if self._closed:
                self._closed = False
                self._stop = threading.Event()
                self._thread = None
                _LIVE.add(self)

    def _append(self, data: bytes) -> bool:
        if self._used + self._written + len(data) > self.max_bytes:
            self.dropped += 1
            return False
        if self._fd < 0 or (self._size and self._size + len(data) > self.segment_bytes):
            self._open_segment()
        written = os.pwrite(self._fd, data, self._size)
        if written < len(data):  # the disk is full
            self.short_writes += 1
            self.failed += 1
            # Should this fail too, the next frame overwrites the torn bytes.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            return False
        self._size += written
        self._written += written
        self._dirty = True
        if self.sync_interval == 0:
            os.fdatasync(self._fd)
        self.spooled += 1
        return True

    def _open_segment(self) -> None:
        self._retire()
        self._seq += 1
        name = f"{self._pid}-{self._token}-{self._seq:06d}"
        hidden = os.path.join(self.directory, f".{name}.tmp")
        with FORK_LOCK:
            fd = os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.rename(hidden, os.path.join(self.directory, name + SEGMENT))
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(hidden)
                raise
            self._fd, self._name, self._size, self._new_segment = fd, name + SEGMENT, 0, True

    def _retire(self) -> None:
        """Stop writing the current segment; the thread syncs and closes it."""
        if self._fd >= 0:
            self._retired[self._fd] = (self._name, self.sync_interval > 0)
            self._fd, self._name, self._size = -1, "", 0

    def active(self) -> tuple[str, int]:
        """The segment this process writes and its size in whole frames
        (``("", 0)`` when none)."""
        with self._lock:
            return self._name, self._size

    def holds(self, name: str) -> bool:
        """Whether this process still holds segment ``name``'s lock (it
        writes it, or wrote it and has not closed it yet)."""
        with self._lock:
            return name == self._name or any(name == n for n, _ in self._retired.values())

    def release(self, name: str, size: int) -> bool:
        """Stop writing segment ``name`` if it holds ``size`` bytes (all
        replayed), so that it may be deleted; whether it was."""
        with self._lock:
            if name != self._name or size != self._size:
                return False
            self._retired[self._fd] = (name, False)
            self._fd, self._name, self._size = -1, "", 0
            return True

    def drops(self) -> int:
        """Records dropped at the bound and not reported yet."""
        with self._lock:
            return self.dropped - self._reported

    def reported(self, count: int) -> None:
        """``count`` of :meth:`drops` were reported (in an audit event)."""
        with self._lock:
            self._reported += count

    def measure(self) -> None:
        """Measure the directory for the bound (every second, and after a
        replayer deleted what it sent)."""
        with self._lock:
            written = self._written
        used = directory_bytes(self.directory)  # may count some of `written` twice: safe
        with self._lock:
            self._used, self._written = used, self._written - written

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            thread = self._thread = threading.Thread(target=self._run, name="cwlogger-spool")
        thread.daemon = True
        with contextlib.suppress(RuntimeError):  # at interpreter exit: no syncing then
            thread.start()

    def _run(self) -> None:
        measured = time.monotonic()
        while not self._stop.wait(self.sync_interval or SCAN_INTERVAL):
            self._tick()
            if time.monotonic() - measured >= SCAN_INTERVAL:
                with contextlib.suppress(OSError):
                    self.measure()
                measured = time.monotonic()

    def _tick(self) -> None:
        """Sync what was written, close retired segments, note the drops."""
        with self._lock:
            fd = self._fd if self._dirty and self.sync_interval else -1
            retired = list(self._retired.items())
            new, self._dirty, self._new_segment = self._new_segment, False, False
            drops = (self.dropped, self._reported)
        for old, (_, sync_first) in retired:
            with contextlib.suppress(OSError):  # a failed sync loses nothing a kill would
                if sync_first:
                    os.fdatasync(old)
            with self._lock, FORK_LOCK:  # in this order, as append takes them
                del self._retired[old]
                with contextlib.suppress(OSError):
                    os.close(old)
        with contextlib.suppress(OSError):
            if fd >= 0:
                os.fdatasync(fd)
            if new:
                directory = os.open(self.directory, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(directory)  # the new segment's name, against power loss
                finally:
                    os.close(directory)
            if drops != self._drops_written:
                self._write_drops(*drops)

    def _write_drops(self, dropped: int, reported: int) -> None:
        """Keep the count of unreported drops where a replayer finds them
        after this process died (the lock tells it so)."""
        if self._drops_fd < 0:
            path = os.path.join(self.directory, f"{self._pid}-{self._token}{DROPS}")
            with FORK_LOCK:
                self._drops_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._drops_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        line = f"{dropped} {reported}".encode().ljust(_DROPS_LINE - 1) + b"\n"
        os.pwrite(self._drops_fd, line, 0)
        self._drops_written = (dropped, reported)

    def close(self) -> None:
        """Sync and close this process's segment (a later :meth:`append`
        opens a new one).  What it holds stays for a replayer; closing twice
        is harmless."""
        if self._pid != os.getpid():
            self.after_fork_in_child()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread, empty = self._thread, self._name if not self._size else ""
            self._retire()
        _LIVE.discard(self)
        self._stop.set()
        if thread is not None and thread.is_alive():
            thread.join(SCAN_INTERVAL)
            if thread.is_alive():  # stuck in a sync: leave its descriptors to it
                return
        if empty:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.directory, empty))
        self._tick()
        if self._drops_fd >= 0:
            if self.dropped == self._reported:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.directory, f"{self._pid}-{self._token}{DROPS}"))
            with FORK_LOCK:
                os.close(self._drops_fd)
                self._drops_fd = -1

    def after_fork_in_child(self) -> None:
        """In a forked child: drop the parent's descriptors (closing, never
        unlocking, as the lock is the parent's too) and start afresh."""
        if self._pid == os.getpid():
            return
        inherited = [self._fd, self._drops_fd, *self._retired]
        for fd in inherited:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._reset()


# Every open spool, told when the process forked.
_LIVE: weakref.WeakSet[Spool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    FORK_LOCK.release()
    for spool in list(_LIVE):
        spool.after_fork_in_child()


os.register_at_fork(
    before=FORK_LOCK.acquire,
    after_in_parent=FORK_LOCK.release,
    after_in_child=_after_fork_in_child,
)
