"""Reloading the config file: on SIGHUP, and when the file changes.

Every `reload.interval` (default 5 s; 0 turns the watching off) the file is `stat`ed; when
its modification time, size or inode changed (a ConfigMap update swaps a symlink, which
changes the inode) its content is hashed, and a new hash is loaded. The file is read and
parsed in a thread, so a large config does not stall the event loop; the new config is
then applied on the loop in one go (Runtime.apply), between two queries. SIGHUP, the
watcher and a worker told by its main process all take this one path (`reload`).

A config that does not load is not applied: the running one stays, every error is logged
with its file, key path and problem, and the failure is counted
(`globaldns_config_reloads_total{result="failure"}`); the same broken content is not
retried until the file changes again. The hash (SHA-256 of the file) and load time of the
running config are exported (`globaldns_config_info`,
`globaldns_config_load_timestamp_seconds`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable

from globaldns.config import Config, ConfigError
from globaldns.config.parse import MAX_CONFIG_BYTES, parse_bytes
from globaldns.config.values import read_bounded

log = logging.getLogger("globaldns.reload")

Signature = tuple[int, int, int]


def digest(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()


def signature(path: str) -> Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class Reloads:
    """The running config's origin (file, hash, load time), reload results, the watcher."""

    def __init__(self, path: str | None, config: Config, *,
                 apply: Callable[[Config], None],
                 interval: Callable[[], float],
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.path = path
        self.apply = apply
        self.interval = interval
        self.clock = clock
        self.sleep = sleep
        """The watcher waits with it (tests pass their own and move time)."""
        self.results = {"success": 0, "failure": 0}
        self.last_error: list[str] = []
        """The errors of the last rejected reload; empty once one succeeds."""
        self.last_attempt: float | None = None
        self.checks = 0
        """How many times the watcher has looked at the file (each look done, whatever it
        found): tests wait for more looks instead of for time."""
        self.loaded_at = clock()
        self._signature: Signature | None = None
        self._rejected = ""
        self.hash = digest(repr(config).encode())
        if path is not None:
            self._signature = signature(path)
            with contextlib.suppress(OSError):
                self.hash = digest(read_bounded(path, MAX_CONFIG_BYTES))
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # --- the watcher ------------------------------------------------------------------

    def start(self) -> None:
        if self.path is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(),
                                                                name="config watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        assert self.path is not None
        missing = False
        while True:
            interval = self.interval()
            await self.sleep(interval if interval > 0 else 1.0)
            if interval <= 0:
                continue
            try:
                current = signature(self.path)
                if current is None:
                    if not missing:
                        log.warning("reload: cannot stat %s; keeping the running config",
                                    self.path)
                    missing = True
                    continue
                missing = False
                if current != self._signature:
                    await self.reload(why="file changed")
            except Exception:  # the watcher outlives any one failure
                log.exception("reload: checking %s failed", self.path)
            finally:
                self.checks += 1

    # --- reloading ----------------------------------------------------------------------

    async def reload(self, *, why: str) -> bool:
        """Load the file (in a thread) and apply it; False when it was not applied."""
        if self.path is None:
            log.info("reload (%s): running on the embedded default, nothing to reload", why)
            return False
        path = self.path
        async with self._lock:
            self._signature = signature(path)
            try:
                content = await asyncio.to_thread(read_bounded, path, MAX_CONFIG_BYTES)
            except OSError as exc:
                return self._failed(why, [f"{path}: cannot read: {exc.strerror}"])
            new_hash = digest(content)
            if new_hash == self.hash and why == "file changed":
                return False  # touched, same content
            if new_hash == self._rejected and why == "file changed":
                return False  # already rejected and logged
            if blank(content):
                self._rejected = new_hash
                return self._failed(why, [BLANK.format(path=path)])
            try:
                config = await asyncio.to_thread(parse_bytes, content, path)
            except Exception as exc:  # ConfigError, or anything else: the reload failed
                self._rejected = new_hash
                return self._failed(why, _errors(path, exc))
            return self._apply(config, new_hash, why)

    def _apply(self, config: Config, new_hash: str, why: str) -> bool:
        try:
            self.apply(config)
        except Exception as exc:
            log.exception("reload (%s): applying %s failed", why, self.path)
            return self._failed(why, [f"{self.path}: applying failed: {exc}"])
        self.results["success"] += 1
        self.hash = new_hash
        self.loaded_at = self.last_attempt = self.clock()
        self.last_error = []
        self._rejected = ""
        log.info("reload (%s): %s applied (%s)", why, self.path, new_hash[:19])
        return True

    def _failed(self, why: str, errors: list[str]) -> bool:
        self.results["failure"] += 1
        self.last_attempt = self.clock()
        self.last_error = list(errors)
        log.error("reload (%s) rejected; the running config stays: %d error(s)", why,
                  len(errors))
        for line in errors:
            log.error("reload rejected: %s", line)
        return False


BLANK = ("{path}: no settings (empty, or only comments): a reload never swaps the running "
         "config for the defaults")


def blank(content: bytes) -> bool:
    """Nothing but whitespace and comments: a truncated write or an emptied ConfigMap, which
    parses as a valid config of defaults (every service and cluster gone)."""
    return all(not line.strip() or line.lstrip().startswith(b"#")
               for line in content.splitlines())


def _errors(path: str, exc: Exception) -> list[str]:
    """A rejected config's lines: a ConfigError's own; any other exception (a bug past the
    config boundary) as one line, its traceback in the log."""
    if isinstance(exc, ConfigError):
        return exc.errors
    log.error("reload: loading %s failed", path, exc_info=exc)
    return [f"{path}: cannot be loaded: {type(exc).__name__}: {str(exc)[:200]}"]
