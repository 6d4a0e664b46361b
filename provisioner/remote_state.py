"""The team backend: state in a versioned S3 bucket, guarded by a lease object.

The lease is taken with a conditional write (If-None-Match: *), renewed and released
with If-Match on its ETag, and holds owner, host, run id and expiry. A lease whose
holder stopped renewing expires and can be taken over; expiry is judged by S3's own
clock (Last-Modified against the response Date), so skewed laptops agree. Every state
write first checks that the lease is still ours and is itself conditional on the
state's last ETag, so two runs can never interleave their writes.
"""

from __future__ import annotations

import email.utils
import getpass
import json
import os
import socket
import threading
import time

from botocore.exceptions import ClientError

from .aws import error_code, if_exists
from .errors import LockHeld, StateError
from .state import describe_holder, now

LEASE_SECONDS = 120
CONFLICT_CODES = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


class StateFenced(BaseException):
    """This run no longer holds the lease (or the state moved under it): stop at once.

    A BaseException, like a crash, so no step records anything after it."""


class S3Backend:
    def __init__(self, s3, bucket: str, key: str, lease_seconds: int = LEASE_SECONDS):
        self.s3, self.bucket, self.key = s3, bucket, key
        self.lease_seconds = lease_seconds
        self.etag: str | None = None
        self.lease: "S3Lease | None" = None

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def check_bucket(self) -> None:
        """The bucket must exist and keep versions (every state write is a recoverable version)."""
        try:
            status = self.s3.get_bucket_versioning(Bucket=self.bucket).get("Status")
        except ClientError as exc:
            raise StateError(f"state bucket {self.bucket}: {error_code(exc)}; create it with versioning on "
                             f"(aws s3api create-bucket --bucket {self.bucket}, then put-bucket-versioning "
                             "Status=Enabled) or fix state.bucket") from exc
        if status != "Enabled":
            raise StateError(f"state bucket {self.bucket} has versioning {status or 'off'}; turn it on "
                             f"(aws s3api put-bucket-versioning --bucket {self.bucket} "
                             "--versioning-configuration Status=Enabled)")

    def exists(self) -> bool:
        return if_exists(self.s3.head_object, Bucket=self.bucket, Key=self.key) is not None

    def load(self) -> dict | None:
        self.check_bucket()
        response = if_exists(self.s3.get_object, Bucket=self.bucket, Key=self.key)
        if response is None:
            return None
        self.etag = response["ETag"]
        try:
            return json.loads(response["Body"].read())
        except ValueError as exc:
            raise StateError(f"state {self} is corrupt ({exc}); it was left as it is. Restore an earlier "
                             "version from the bucket's version history") from exc

    def save(self, data: dict) -> None:
        if self.lease is not None:
            self.lease.check()
        condition = {"IfMatch": self.etag} if self.etag else {"IfNoneMatch": "*"}
        try:
            response = self.s3.put_object(Bucket=self.bucket, Key=self.key, ServerSideEncryption="AES256",
                                          ContentType="application/json", **condition,
                                          Body=json.dumps(data, indent=2, sort_keys=True).encode())
        except ClientError as exc:
            if error_code(exc) in CONFLICT_CODES:
                raise StateFenced(f"state {self} was written by another run since this one read it; this run "
                                  "stopped without writing. Run the command again") from exc
            raise
        self.etag = response["ETag"]

    def lock(self, run_id: str, command: str, wait_seconds: float = 0) -> "S3Lease":
        self.lease = S3Lease(self.s3, self.bucket, self.key + ".lock", run_id, command,
                             self.lease_seconds, wait_seconds)
        return self.lease


class S3Lease:
    def __init__(self, s3, bucket: str, key: str, run_id: str, command: str,
                 lease_seconds: int = LEASE_SECONDS, wait_seconds: float = 0):
        self.s3, self.bucket, self.key = s3, bucket, key
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.info = {"owner": getpass.getuser(), "host": socket.gethostname(), "pid": os.getpid(),
                     "run_id": run_id, "command": command, "started_at": now(), "lease_seconds": lease_seconds}
        self.etag: str | None = None
        self.lost = False
        # Renewal changes the ETag; a check racing it would see a lease that is still ours as lost.
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _body(self) -> bytes:
        expires = time.time() + self.lease_seconds
        return json.dumps({**self.info, "renewed_at": now(),
                           "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))}).encode()

    def _put(self, **condition) -> str:
        return self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(),
                                  ContentType="application/json", **condition)["ETag"]

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                self.etag = self._put(IfNoneMatch="*")
                break
            except ClientError as exc:
                if error_code(exc) not in CONFLICT_CODES:
                    raise
            current = self.read()
            if current is None:
                continue  # released between our write and our read
            holder, etag, expired = current
            if expired:
                try:
                    self.etag = self._put(IfMatch=etag)
                    break
                except ClientError as exc:
                    if error_code(exc) not in CONFLICT_CODES + ("NoSuchKey", "404"):
                        raise
                    continue  # another run took it over first
            if time.monotonic() >= deadline:
                raise LockHeld(describe_holder(holder) + f", lease until {holder.get('expires_at')}; wait for it "
                               "(--lock-timeout SECONDS) or, if that run is dead, `lock break`")
            time.sleep(min(2.0, max(0.1, self.lease_seconds / 10)))
        self._renewer = threading.Thread(target=self._renew_loop, name="lease-renewer", daemon=True)
        self._renewer.start()

    def read(self) -> tuple[dict, str, bool] | None:
        """(holder, etag, expired) of the current lease, or None when there is none."""
        response = if_exists(self.s3.get_object, Bucket=self.bucket, Key=self.key)
        if response is None:
            return None
        try:
            holder = json.loads(response["Body"].read())
        except ValueError:
            holder = {}
        server_now = _server_time(response) or time.time()
        renewed = response["LastModified"].timestamp()
        expired = server_now > renewed + float(holder.get("lease_seconds", LEASE_SECONDS))
        return holder, response["ETag"], expired

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            with self._mutex:
                try:
                    self.etag = self._put(IfMatch=self.etag)
                except ClientError:
                    self.lost = True
                    return

    def check(self) -> None:
        """Fence: the lease object must still be the one this run wrote."""
        with self._mutex:
            if not self.lost:
                try:
                    current = self.s3.head_object(Bucket=self.bucket, Key=self.key)["ETag"]
                except ClientError:
                    current = None  # gone, or unreadable: either way ownership is not proven
                self.lost = current != self.etag
        if self.lost:
            raise StateFenced(f"this run lost its lease on s3://{self.bucket}/{self.key} (expired, or broken by "
                              "`lock break`); it stopped without writing. Run the command again")

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        if self.etag and not self.lost:
            try:
                self.s3.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
            except ClientError:
                pass  # already taken over or broken: nothing of ours to release

    def holder(self) -> dict | None:
        current = self.read()
        return None if current is None else {**current[0], "expired": current[2]}

    def break_lock(self) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self.key)


def _server_time(response) -> float | None:
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    parsed = email.utils.parsedate_to_datetime(date) if date else None
    return parsed.timestamp() if parsed else None
