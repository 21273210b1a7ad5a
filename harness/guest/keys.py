"""Guest assets: the per-run SSH keys.

A fresh client key pair (its public half becomes root's authorized key in
the guest) and a guest host key made on the host, so the harness can pin the
guest's identity exactly: no password, no trust-on-first-use.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import paramiko

from harness.commands import run
from harness.errors import GuestError


@dataclass(frozen=True)
class RunKeys:
    client_key: Path  # OpenSSH private key file, mode 0600
    authorized_key: str  # "ecdsa-sha2-nistp256 AAAA... harness"
    host_key: Path  # dropbear-format private host key for the guest
    host_public: str  # "ssh-ed25519 AAAA..." as the guest will present it


def make(directory: Path) -> RunKeys:
    directory.mkdir(parents=True, exist_ok=True)
    client = paramiko.ECDSAKey.generate(bits=256)
    client_path = directory / "id_ecdsa"
    client.write_private_key_file(str(client_path))
    client_path.chmod(0o600)
    host_path = directory / "dropbear_ed25519_host_key"
    host_path.unlink(missing_ok=True)
    run(["dropbearkey", "-t", "ed25519", "-f", str(host_path)], error=GuestError, what="dropbearkey")
    output = run(["dropbearkey", "-y", "-f", str(host_path)], error=GuestError, what="dropbearkey -y")
    public = next((line for line in output.splitlines() if line.startswith("ssh-ed25519 ")), None)
    if public is None:
        raise GuestError(f"dropbearkey printed no public key for {host_path}:\n{output}")
    return RunKeys(client_path, f"{client.get_name()} {client.get_base64()} harness", host_path,
                   " ".join(public.split()[:2]))


def host_key_object(public: str) -> paramiko.PKey:
    kind, blob = public.split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
