"""The deployment's state file and the lock that keeps two runs apart.

The file is JSON with a format version, written atomically (temp file, fsync, rename)
with mode 0600 after every change, so a crash at any instant leaves either the old or
the new file, never half of one. It holds references only: IDs, ARNs, parameter names.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager

from .errors import LockHeld, StateError

FORMAT_VERSION = 1
KEPT_RUNS = 50  # the run records `report` can draw (a few KB each)
LOCK_POLL_SECONDS = 1.0


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def default_path(deployment: str) -> str:
    return os.path.join("state", f"{deployment}.json")


class LocalBackend:
    """The state as a local file, replaced atomically; locked by a file beside it."""

    def __init__(self, path: str):
        self.path = path

    def __str__(self) -> str:
        return self.path

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def load(self) -> dict | None:
        if not self.exists():
            return None
        try:
            with open(self.path, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError) as exc:
            raise StateError(f"state file {self.path} is unreadable or corrupt ({exc}); it was left as it is. "
                             "Restore it from a backup, or move it aside: destroy can find resources by their tags "
                             "without it")

    def save(self, data: dict) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        temp = f"{self.path}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def lock(self, run_id: str, command: str, wait_seconds: float = 0) -> "FileLock":
        return FileLock(self.path, run_id, command, wait_seconds)


class StateStore:
    """Thread-safe view of one deployment's state; every update is persisted at once."""

    def __init__(self, backend, deployment: str):
        self.backend = backend
        self.deployment = deployment
        self._mutex = threading.RLock()
        self.data = self._validated(backend.load())

    def _validated(self, data) -> dict:
        where = f"state {self.backend}"
        if data is None:
            return {"format_version": FORMAT_VERSION, "deployment": self.deployment, "serial": 0,
                    "lineage": str(uuid.uuid4()), "steps": {}}
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            found = data.get("format_version") if isinstance(data, dict) else None
            raise StateError(f"{where} has format version {found!r}; this provisioner reads version "
                             f"{FORMAT_VERSION}. Use the provisioner release that wrote it; it was left as it is")
        if data.get("deployment") != self.deployment:
            raise StateError(f"{where} belongs to deployment {data.get('deployment')!r}, not "
                             f"{self.deployment!r}; pass --state with this deployment's file")
        if not isinstance(data.get("steps"), dict):
            raise StateError(f"{where} has no steps table; it was left as it is")
        return data

    def _write(self) -> None:
        self.data["serial"] += 1
        self.data["updated_at"] = now()
        self.backend.save(self.data)

    def step(self, name: str) -> dict:
        """A copy of one step's record (empty defaults when the step never ran)."""
        with self._mutex:
            record = self.data["steps"].get(name) or {}
            return json.loads(json.dumps(record)) if record else {
                "status": "pending", "outputs": {}, "physical_ids": {}}

    def update_step(self, name: str, **fields) -> None:
        with self._mutex:
            record = self.data["steps"].setdefault(name, {"status": "pending", "outputs": {}, "physical_ids": {}})
            record.update(fields)
            self._write()

    def record_physical_id(self, step: str, key: str, value: str | None) -> None:
        """Persist one physical ID the moment AWS returns it (None forgets it)."""
        with self._mutex:
            record = self.data["steps"].setdefault(step, {"status": "creating", "outputs": {}, "physical_ids": {}})
            ids = record.setdefault("physical_ids", {})
            if value is None:
                if key not in ids:
                    return
                ids.pop(key)
            elif ids.get(key) == value:
                return
            else:
                ids[key] = value
            self._write()

    def outputs(self, step: str) -> dict:
        return self.step(step).get("outputs", {})

    def save_run(self, run: dict) -> None:
        """Write one apply's or destroy's record (new, or the latest updated), keeping the
        latest KEPT_RUNS."""
        with self._mutex:
            runs = self.data.setdefault("runs", [])
            copy = json.loads(json.dumps(run))
            if runs and runs[-1].get("run_id") == run["run_id"]:
                runs[-1] = copy
            else:
                runs.append(copy)
                del runs[:-KEPT_RUNS]
            self._write()

    def runs(self) -> list[dict]:
        """The recorded runs, oldest first."""
        with self._mutex:
            return json.loads(json.dumps(self.data.get("runs", [])))

    def all_steps(self) -> dict:
        with self._mutex:
            return json.loads(json.dumps(self.data["steps"]))


class FileLock:
    """An exclusive lock file beside the state: holder's pid, host, run id and start time.

    A lock whose holder process is gone (same host, pid not alive) is taken over, so a
    killed run never blocks the next one.
    """

    def __init__(self, state_path: str, run_id: str, command: str, wait_seconds: float = 0):
        self.path = state_path + ".lock"
        self.wait_seconds = wait_seconds
        self.info = {"pid": os.getpid(), "host": socket.gethostname(), "run_id": run_id,
                     "command": command, "started_at": now()}

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                holder = self.holder()
                if holder is not None and self._alive(holder):
                    if time.monotonic() < deadline:
                        time.sleep(LOCK_POLL_SECONDS)
                        continue
                    raise LockHeld(describe_holder(holder) + "; wait for it to finish (or pass --lock-timeout). "
                                   "If that process is gone from another host, run `lock break`")
                self.break_lock()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.info, handle)
                handle.flush()
                os.fsync(handle.fileno())
            return

    def holder(self) -> dict | None:
        try:
            with open(self.path, encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None
        except ValueError:
            return {}  # half-written by a run killed while locking: stale

    def _alive(self, holder: dict) -> bool:
        if holder.get("host") != socket.gethostname():
            return True  # cannot see another host's processes: assume it lives
        try:
            os.kill(int(holder.get("pid", 0)), 0)
        except (ProcessLookupError, ValueError):
            return False
        except PermissionError:
            return True
        return int(holder.get("pid", 0)) > 0

    def break_lock(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def release(self) -> None:
        holder = self.holder()
        if holder and holder.get("run_id") == self.info["run_id"]:
            self.break_lock()


def describe_holder(holder: dict) -> str:
    return (f"deployment is locked by {holder.get('command', 'a run')} (pid {holder.get('pid')} on "
            f"{holder.get('host')}, run {holder.get('run_id')}, since {holder.get('started_at')})")


@contextmanager
def locked(lock):
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
