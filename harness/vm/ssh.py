"""VM stage: SSH into the guest (paramiko client, dropbear server).

The guest's host key is pinned to the one made for this run (anything else
is refused, never learned), the client logs in with the run's own key, and
the forwarded port listens on 127.0.0.1 only (see the QEMU profile).
Hands on a `GuestShell` that runs commands and moves files over SFTP.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from harness.errors import GuestError
from harness.guest.keys import RunKeys, host_key_object

HOST = "127.0.0.1"
STDERR_KEEP = 64 * 1024  # a command's stderr as kept: its last 64 KiB (a guest may print without end)


@dataclass(frozen=True)
class CommandResult:
    status: int | None  # None when the command timed out
    stdout: str  # "" when the caller took it as it arrived (`on_stdout`)
    stderr: str  # its last STDERR_KEEP bytes

    @property
    def timed_out(self) -> bool:
        return self.status is None


class GuestShell:
    def __init__(self, client: paramiko.SSHClient, reconnect: Callable[[], paramiko.SSHClient]):
        self.client = client
        self._reconnect = reconnect

    def _fresh_connection(self) -> None:
        """dropbear now and then drops a connection right after an SFTP
        session (seen on 2022.83): connect again, same pinned keys."""
        self.client.close()
        self.client = self._reconnect()

    @classmethod
    def connect(cls, port: int, keys: RunKeys, timeout: float,
                console_tail: Callable[[], str] = lambda: "") -> GuestShell:
        """Connect as root, retrying until `timeout` while the guest's sshd starts."""
        client = cls._client(port, keys, timeout, console_tail)
        return cls(client, lambda: cls._client(port, keys, 10, console_tail))

    @staticmethod
    def _client(port: int, keys: RunKeys, timeout: float, console_tail: Callable[[], str]) -> paramiko.SSHClient:
        deadline = time.monotonic() + timeout
        last_error = "no attempt made"
        client_key = paramiko.PKey.from_path(keys.client_key)
        while time.monotonic() < deadline:
            client = paramiko.SSHClient()
            client.get_host_keys().add(f"[{HOST}]:{port}", *_split(keys.host_public))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            try:
                client.connect(HOST, port, username="root", pkey=client_key,
                               look_for_keys=False, allow_agent=False, timeout=5, banner_timeout=10,
                               auth_timeout=10)
                return client
            except paramiko.BadHostKeyException as e:
                client.close()
                raise GuestError(
                    f"the guest on {HOST}:{port} presented host key {e.key.get_fingerprint().hex()}, "
                    "not the one made for this run: refusing to connect (another guest on this port?)"
                ) from None
            except paramiko.AuthenticationException:
                client.close()
                raise GuestError(f"the guest on {HOST}:{port} refused this run's SSH key") from None
            except (OSError, paramiko.SSHException, EOFError) as e:
                client.close()
                last_error = str(e) or type(e).__name__
                time.sleep(0.5)
        raise GuestError(f"could not connect over SSH to {HOST}:{port} within {timeout:.0f} s "
                         f"(last error: {last_error})\nlast console lines:\n{console_tail()}")

    def run(self, command: str, timeout: float,
            on_stdout: Callable[[bytes], None] | None = None) -> CommandResult:
        """Run `command` in the guest's shell; stdout and stderr are kept apart.

        `on_stdout` takes stdout as it arrives (to a file, for live progress):
        it is then not kept here, so memory stays bounded however much the guest prints."""
        channel = self._exec(command)
        out, err = bytearray(), bytearray()

        def took(chunk: bytes, stderr: bool = False) -> None:
            if not chunk:
                return
            if stderr:
                err.extend(chunk)
                del err[:-STDERR_KEEP]
            elif on_stdout:
                on_stdout(chunk)
            else:
                out.extend(chunk)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if channel.recv_ready():
                took(channel.recv(65536))
            elif channel.recv_stderr_ready():
                took(channel.recv_stderr(65536), stderr=True)
            elif channel.exit_status_ready():
                break
            else:
                time.sleep(0.01)
        else:
            channel.close()
            return CommandResult(None, out.decode(errors="replace"), err.decode(errors="replace"))
        while channel.recv_ready() or channel.recv_stderr_ready():  # what arrived with the exit status
            took(channel.recv(65536) if channel.recv_ready() else b"")
            took(channel.recv_stderr(65536) if channel.recv_stderr_ready() else b"", stderr=True)
        status = channel.recv_exit_status()
        channel.close()
        return CommandResult(status, out.decode(errors="replace"), err.decode(errors="replace"))

    def _exec(self, command: str, tries: int = 3) -> paramiko.Channel:
        """A channel running `command`. A channel closed at once, or a
        connection gone, gets another try (see _fresh_connection)."""
        error: Exception | None = None
        for _attempt in range(tries):
            transport = self.client.get_transport()
            if transport is None or not transport.is_active():
                self._fresh_connection()
                transport = self.client.get_transport()
            try:
                if transport is None:
                    raise paramiko.SSHException("not connected")
                channel = transport.open_session()
                channel.settimeout(1.0)
                channel.exec_command(command)
                return channel
            except (paramiko.SSHException, OSError) as e:
                error = e
                time.sleep(0.2)
        raise GuestError(f"the guest's SSH server did not run '{command}': {error}")

    def _sftp(self, action: Callable[[paramiko.SFTPClient], None], what: str) -> None:
        for attempt in range(2):
            try:
                with self.client.open_sftp() as sftp:
                    action(sftp)
                return
            except (paramiko.SSHException, OSError, EOFError) as e:
                if attempt == 1:
                    raise GuestError(f"could not {what}: {e}") from None
                self._fresh_connection()

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        def put(sftp: paramiko.SFTPClient) -> None:
            sftp.put(str(local), remote)
            if mode is not None:
                sftp.chmod(remote, mode)
        self._sftp(put, f"copy {local} to the guest's {remote}")

    def abandon(self) -> None:
        """Give up on the commands running now (after a crash they may never
        return): their connection is closed; the next command connects again."""
        self.client.close()

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> GuestShell:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _split(public: str) -> tuple[str, paramiko.PKey]:
    return public.split()[0], host_key_object(public)

