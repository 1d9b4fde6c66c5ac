"""A bounded disk spool for events published while the broker is down (optional, off by default).

With `FASHIONAI_SPOOL_DIR` set, a publish the broker did not take (BrokerUnavailable) or did not
answer in time (PublishUnknown) is written to a SQLite file in that folder instead, and the
caller gets the outcome "spooled". A replayer thread in each process that has the spool open
sends spooled messages to the broker, oldest first, once it answers again, and deletes each
batch after the broker has it. This changes the README's promise "nothing is buffered behind
your back" in one documented way: an event the spool accepted is on this host's disk, not yet
on the broker; it reaches the broker when the broker is back, or is dropped (and counted) once
it is older than `max_age`.

Why SQLite from the standard library: several server processes (gunicorn workers) write the
same spool, and SQLite's file locking makes that safe, with WAL so a replayer's reads do not
block writers. diskcache is process-safe too but stores values with pickle by default and
brings a dependency; persist-queue is not safe across processes. The spool stores only the
text of wire messages the publisher built itself (producers.message), never pickles.

Guarantees and bounds:
- `put` never waits on a lock longer than the `timeout` it is given (the caller's publish
  bound): the busy timeout is that long, and a spool it cannot write in time refuses the
  messages (the caller then reports them as not published).
- Bounded by `max_bytes` (sum of message sizes): messages beyond it are refused and counted
  (`dropped_full`); by `max_age` seconds: older messages are dropped at replay and counted
  (`dropped_old`). Counters live in the spool file, shared by every process.
- A committed `put` survives a crash or restart of the process (WAL, synchronous=NORMAL); with
  `fsync=True` (synchronous=FULL) it also survives a power loss, at the cost of a disk flush per
  write.
- Replay keeps the spool's order: one replayer at a time across processes (a lease row), FIFO by
  insertion. A crash between "the broker has the batch" and "the batch is deleted" sends that
  batch again (at most `replay_batch` duplicates); the envelope keeps its message id, so the
  worker's duplicate-id marks drop what it has already recorded.
- Fork-safe: a forked child opens its own connection and starts its own replayer on first use.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from fashionai_pipeline.producers.errors import ConfigurationError

log = logging.getLogger("fashionai.spool")

FILE_NAME: Final = "fashionai-spool.sqlite3"
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS spooled (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    spooled_at REAL NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS lease (id INTEGER PRIMARY KEY CHECK (id = 1), owner TEXT, until REAL);
INSERT OR IGNORE INTO counters (name, value) VALUES
    ('bytes', 0), ('spooled', 0), ('replayed', 0), ('dropped_full', 0), ('dropped_old', 0);
INSERT OR IGNORE INTO lease (id, owner, until) VALUES (1, NULL, 0);
"""

Stored = Literal["stored", "full", "failed"]
"""What became of a `Spool.store`: kept, refused for `max_bytes`, or not written (logged)."""

Send = Callable[[str, list[tuple[str, str]]], None]
"""Hand `(payload, message_id)` pairs for one queue to the broker; raise if it did not take them."""


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """The spool's shared counters (every process's puts and replays) and what it holds now."""

    pending: int
    bytes: int
    spooled: int
    replayed: int
    dropped_full: int
    dropped_old: int


@dataclass(frozen=True, slots=True)
class _Row:
    seq: int
    queue: str
    message_id: str
    payload: str
    spooled_at: float
    size: int


class Spool:
    """One process's handle on a spool file; thread-safe (one connection per thread)."""

    def __init__(
        self,
        directory: str,
        *,
        max_bytes: int = 100 * 1024 * 1024,
        max_age: float = 24 * 3600.0,
        fsync: bool = False,
        replay_batch: int = 200,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open (creating it and its folder if need be) the spool in `directory`.

        Raises ConfigurationError naming FASHIONAI_SPOOL_DIR when the folder cannot be made or
        the spool file in it cannot be written (a regular file by that name, no permission, a
        read-only disk, a file that is not a spool): here, not at the first publish to spool.
        """
        self.path = os.path.join(directory, FILE_NAME)
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.replay_batch = replay_batch
        self._sync = "FULL" if fsync else "NORMAL"
        self._clock = clock
        self._local = threading.local()
        self._pid = os.getpid()
        self._owner = f"{os.uname().nodename}:{os.getpid()}:{id(self)}"
        self._replayer_pid: int | None = None
        self._stop = threading.Event()
        _usable(directory, self.path)
        try:
            with self._connect(5.0) as conn:
                conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:  # e.g. "file is not a database", "disk I/O error"
            raise ConfigurationError(f"{_SETTING}: {directory}: cannot use {FILE_NAME} in it: {exc}") from exc

    def __repr__(self) -> str:
        return f"<Spool {self.path}>"

    # -- writing -----------------------------------------------------------------------

    def put(self, queue: str, messages: Sequence[tuple[str, str]], *, timeout: float) -> bool:
        """Keep `messages` (payload, message id) for `queue`, all or none, within `timeout` s.

        Returns False, counting the messages in `dropped_full`, when they would take the spool
        past `max_bytes`; False without counting when the spool could not be written in time
        (locked by other processes, disk error: logged). Never raises for those.
        """
        return self.store(queue, messages, timeout=timeout) == "stored"

    def store(self, queue: str, messages: Sequence[tuple[str, str]], *, timeout: float) -> Stored:
        """`put`, answering why it refused: "stored" (True), "full" (past `max_bytes`,
        counted in `dropped_full`), or "failed" (not written in time, or a disk error)."""
        if not messages:
            return "stored"
        now = self._clock()
        rows = [(queue, msg_id, payload, now, len(payload.encode())) for payload, msg_id in messages]
        size = sum(row[4] for row in rows)
        try:
            conn = self._conn(timeout)
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                (held,) = conn.execute("SELECT value FROM counters WHERE name = 'bytes'").fetchone()
                if held + size > self.max_bytes:
                    conn.execute(
                        "UPDATE counters SET value = value + ? WHERE name = 'dropped_full'", (len(rows),)
                    )
                    return "full"
                conn.executemany(
                    "INSERT INTO spooled (queue, message_id, payload, spooled_at, size)"
                    " VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
                conn.execute("UPDATE counters SET value = value + ? WHERE name = 'bytes'", (size,))
                conn.execute("UPDATE counters SET value = value + ? WHERE name = 'spooled'", (len(rows),))
        except sqlite3.Error as exc:
            log.warning("spool %s could not be written: %s", self.path, exc)
            return "failed"
        return "stored"

    # -- replaying ---------------------------------------------------------------------

    def replay(self, send: Send, *, lease_s: float = 30.0) -> int:
        """Send everything spooled, oldest first, if this process holds the replay lease.

        Stops at the first batch `send` refuses (raises: the broker is not back): that batch
        stays, in place, for the next call. Messages older than `max_age` are dropped and
        counted instead of sent. Returns how many were sent. Raises nothing for spool trouble
        (logged).
        """
        sent = 0
        try:
            if not self._take_lease(lease_s):
                return 0
            try:
                while True:
                    rows = self._oldest()
                    if not rows:
                        return sent
                    rows = self._drop_expired(rows)
                    if not rows:
                        continue
                    self._renew_lease(lease_s)
                    for queue, group in _by_queue_in_order(rows):
                        try:
                            send(queue, [(r.payload, r.message_id) for r in group])
                        except Exception as exc:  # the broker's own errors: it is not back yet
                            log.info("spool replay paused: the broker did not take a batch (%s)", exc)
                            return sent
                        self._delete(group, replayed=True)
                        sent += len(group)
            finally:
                self._release_lease()
        except sqlite3.Error as exc:
            log.warning("spool %s could not be replayed: %s", self.path, exc)
        return sent

    def start_replayer(self, send: Send, *, interval: float = 1.0) -> None:
        """Replay in a daemon thread of this process every `interval` s while anything is spooled.

        Idempotent per process; a forked child starts its own on its first call. The thread
        holds no lock between rounds, so a fork cannot inherit one held.
        """
        if self._replayer_pid == os.getpid():
            return
        self._replayer_pid = os.getpid()
        self._stop = threading.Event()
        stop = self._stop

        def run() -> None:
            while not stop.wait(interval):
                try:
                    if self.pending():
                        self.replay(send)
                except Exception:  # a replayer must outlive any one failure; the next round retries
                    log.warning("spool replay round failed", exc_info=True)

        threading.Thread(target=run, name="fashionai-spool-replay", daemon=True).start()

    def stop_replayer(self) -> None:
        """Stop this process's replayer thread after its current round."""
        if self._replayer_pid == os.getpid():
            self._stop.set()
            self._replayer_pid = None

    def pending(self) -> int:
        (n,) = self._conn(5.0).execute("SELECT count(*) FROM spooled").fetchone()
        return int(n)

    def stats(self) -> SpoolStats:
        conn = self._conn(5.0)
        counts = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        return SpoolStats(
            pending=self.pending(),
            bytes=counts["bytes"],
            spooled=counts["spooled"],
            replayed=counts["replayed"],
            dropped_full=counts["dropped_full"],
            dropped_old=counts["dropped_old"],
        )

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None and self._pid == os.getpid():
            conn.close()

    # -- internals -----------------------------------------------------------------------

    def _oldest(self) -> list[_Row]:
        cur = self._conn(5.0).execute(
            "SELECT seq, queue, message_id, payload, spooled_at, size FROM spooled ORDER BY seq LIMIT ?",
            (self.replay_batch,),
        )
        return [_Row(*row) for row in cur.fetchall()]

    def _drop_expired(self, rows: list[_Row]) -> list[_Row]:
        horizon = self._clock() - self.max_age
        old = [r for r in rows if r.spooled_at < horizon]
        if old:
            self._delete(old, replayed=False)
            log.warning("spool: dropped %d event(s) older than %gs", len(old), self.max_age)
        return [r for r in rows if r.spooled_at >= horizon]

    def _delete(self, rows: Sequence[_Row], *, replayed: bool) -> None:
        counter = "replayed" if replayed else "dropped_old"
        conn = self._conn(5.0)
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            # Only this process's lease holder deletes, so every row is still there.
            conn.executemany("DELETE FROM spooled WHERE seq = ?", [(r.seq,) for r in rows])
            size = sum(r.size for r in rows)
            conn.execute("UPDATE counters SET value = value - ? WHERE name = 'bytes'", (size,))
            conn.execute("UPDATE counters SET value = value + ? WHERE name = ?", (len(rows), counter))

    def _take_lease(self, lease_s: float) -> bool:
        now = self._clock()
        conn = self._conn(5.0)
        with conn:
            cur = conn.execute(
                "UPDATE lease SET owner = ?, until = ?"
                " WHERE id = 1 AND (owner IS NULL OR owner = ? OR until < ?)",
                (self._owner, now + lease_s, self._owner, now),
            )
        return cur.rowcount == 1

    def _renew_lease(self, lease_s: float) -> None:
        conn = self._conn(5.0)
        with conn:
            conn.execute(
                "UPDATE lease SET until = ? WHERE id = 1 AND owner = ?",
                (self._clock() + lease_s, self._owner),
            )

    def _release_lease(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            conn = self._conn(5.0)
            with conn:
                conn.execute(
                    "UPDATE lease SET owner = NULL, until = 0 WHERE id = 1 AND owner = ?", (self._owner,)
                )

    def _conn(self, timeout: float) -> sqlite3.Connection:
        if self._pid != os.getpid():  # a forked child: the parent's connections stay the parent's
            self._local, self._pid = threading.local(), os.getpid()
            self._owner = f"{os.uname().nodename}:{os.getpid()}:{id(self)}"
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(timeout)
            self._local.conn = conn
        else:
            conn.execute(f"PRAGMA busy_timeout = {max(1, int(timeout * 1000))}")
        return conn

    def _connect(self, timeout: float) -> sqlite3.Connection:
        # isolation_level=None: transactions are opened explicitly (BEGIN IMMEDIATE), so a
        # writer takes the write lock up front instead of failing on upgrade.
        conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        # WAL is a property of the file, set once; switching to it needs a lock that SQLite's
        # busy timeout does not wait for, so processes opening a new spool together retry.
        deadline = time.monotonic() + timeout
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError:
                if time.monotonic() >= deadline:
                    conn.close()
                    raise
                time.sleep(0.005)
        conn.execute(f"PRAGMA synchronous = {self._sync}")
        return conn


_SETTING: Final = "FASHIONAI_SPOOL_DIR"


def _usable(directory: str, path: str) -> None:
    """Make `directory`, and make sure it and the spool file `path` in it can be written (SQLite
    keeps its WAL files beside the spool), else raise ConfigurationError. Checked by writing,
    not with os.access (which says yes to root whatever the mode bits) nor by SQLite alone
    (which opens an unwritable file read-only, and whose open retries in `_connect` would wait
    5 s before failing)."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ConfigurationError(f"{_SETTING}: {directory} is not a directory (a file by that name exists)")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"{_SETTING}: {directory}: cannot create it: {_reason(exc)}") from exc
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise ConfigurationError(
            f"{_SETTING}: {directory}: cannot write the spool in it: {_reason(exc)}"
        ) from exc


def _reason(exc: OSError) -> str:
    """The OS's words for `exc` ("Permission denied"), without the path it repeats."""
    return exc.strerror or type(exc).__name__


def _by_queue_in_order(rows: list[_Row]) -> list[tuple[str, list[_Row]]]:
    """Consecutive runs of one queue, in spool order (a run goes to the broker as one unit)."""
    runs: list[tuple[str, list[_Row]]] = []
    for row in rows:
        if runs and runs[-1][0] == row.queue:
            runs[-1][1].append(row)
        else:
            runs.append((row.queue, [row]))
    return runs
