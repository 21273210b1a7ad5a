"""Guest access over SSH: real dropbear in the guest, paramiko on the host,
a port forwarded on 127.0.0.1 only, keys made for each run."""
from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import harness, process_gone

from harness import cli, pipeline
from harness.errors import GuestError
from harness.groups.guest import Ended, Guest, run_watched
from harness.guest import initramfs, keys
from harness.spec import Spec
from harness.vm.ssh import GuestShell

pytestmark = pytest.mark.integration


def port_is_loopback_only(port: int) -> bool:
    """From the kernel's socket table: every listener on `port` is bound to 127.0.0.1."""
    listeners = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                listeners.append(address)
    return bool(listeners) and all(a == "0100007F" for a in listeners)


@pytest.fixture(scope="module")
def guest(default_kernel, tmp_path_factory):
    out = tmp_path_factory.mktemp("ssh")
    with pipeline.scratch_dir() as scratch:
        kb, _ = pipeline.prepare(Spec(), out, scratch)
        with pipeline.booted(Spec(), kb, out, scratch) as vm, pipeline.guest_shell(vm) as shell:
            yield vm, shell


def test_sftp_push_keeps_every_byte(guest, tmp_path):
    _, shell = guest
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(16 * 1024 * 1024))
    shell.put(blob, "/tmp/blob")
    result = shell.run("sha256sum /tmp/blob", timeout=60)
    assert result.status == 0
    assert result.stdout.split()[0] == hashlib.sha256(blob.read_bytes()).hexdigest()
    with shell.client.open_sftp() as sftp:
        sftp.get("/tmp/blob", str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == blob.read_bytes()


def test_commands_return_status_stdout_and_stderr_apart(guest):
    _, shell = guest
    result = shell.run("echo out; echo err >&2; exit 7", timeout=10)
    assert (result.status, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert shell.run("sleep 30", timeout=1).timed_out


def test_a_watched_command_ends_after_what_the_kernel_printed_while_it_ran(guest, tmp_path):
    """A command run under watch returns only once the console holds every kernel line
    printed before it ended (its end mark, through the kernel's log, comes after them),
    for more commands in a row than /dev/kmsg takes by default (10 in 5 s)."""
    vm, shell = guest
    watched_guest = Guest(vm, Spec(), tmp_path, lambda: shell)
    for _ in range(12):
        watched = run_watched(watched_guest, "echo h > /proc/sysrq-trigger", timeout=30)
        assert watched.ended is Ended.DONE and watched.command.status == 0
        printed = [text for _, text in vm.console.lines(since=watched.since)]
        helped = [i for i, text in enumerate(printed) if "sysrq: HELP" in text]
        marked = [i for i, text in enumerate(printed) if f"{initramfs.MARKER}: command" in text]
        assert helped and marked and helped[0] < marked[0], printed


def test_a_watched_command_keeps_its_exit_status_and_output(guest, tmp_path):
    """The end mark wraps the command: its status, output and a trailing comment are its own."""
    vm, shell = guest
    watched = run_watched(Guest(vm, Spec(), tmp_path, lambda: shell), "echo out; echo err >&2; exit 3 # a comment",
                          timeout=30)
    assert (watched.ended, watched.command.status) == (Ended.DONE, 3)
    assert (watched.command.stdout, watched.command.stderr) == ("out\n", "err\n")


def test_forwarded_port_listens_on_loopback_only(guest):
    vm, _ = guest
    assert port_is_loopback_only(vm.ssh_port)


def test_another_client_key_is_refused(guest, tmp_path):
    vm, _ = guest
    stranger = replace(vm.image.keys, client_key=keys.make(tmp_path).client_key)
    with pytest.raises(GuestError, match="refused this run's SSH key"):
        GuestShell.connect(vm.ssh_port, stranger, timeout=10)


def test_a_changed_host_key_is_refused(guest, tmp_path):
    vm, _ = guest
    impostor = replace(vm.image.keys, host_public=keys.make(tmp_path).host_public)
    with pytest.raises(GuestError, match="not the one made for this run: refusing to connect"):
        GuestShell.connect(vm.ssh_port, impostor, timeout=10)


def test_boot_exec_prints_output_and_passes_the_exit_status(default_kernel, tmp_path):
    result = harness("boot", "--exec", "cat /sys/devices/system/node/online", "--out", str(tmp_path / "a"))
    assert (result.returncode, result.stdout) == (0, "0-1\n"), result.stderr[-2000:]
    result = harness("boot", "--exec", "exit 3", "--out", str(tmp_path / "b"))
    assert result.returncode == 3, result.stderr[-2000:]


def test_two_runs_at_once_both_succeed(default_kernel, tmp_path, start_harness):
    runs = [start_harness(tmp_path / name, "boot", "--exec", "cat /proc/swaps") for name in ("one", "two")]
    for run in runs:
        stdout, stderr = run.proc.communicate(timeout=900)
        assert run.proc.returncode == 0, stderr[-2000:]
        assert "/dev/vda" in stdout
    pids = {(tmp_path / name / "qemu.pid").read_text() for name in ("one", "two")}
    assert len(pids) == 2


def test_unreachable_ssh_exits_2_with_the_console_tail(default_kernel, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(initramfs, "_ssh_binaries", lambda: {})  # an image without dropbear
    monkeypatch.setattr(pipeline, "SSH_CONNECT_S", 5)
    status = cli.main(["boot", "--exec", "true", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "could not connect over SSH to 127.0.0.1" in err and "last console lines" in err
    assert "harness-guest: ready" in err and "Traceback" not in err
    assert process_gone(int((tmp_path / "qemu.pid").read_text()))
