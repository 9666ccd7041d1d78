"""Every subcommand with every option form the original `control` accepts, through both `control`
and `cml-control`, against a real cmld: what the daemon did (state changes, files, its reply, its
log) and each program's exit status. Then the hostile side: unknown options, missing arguments,
huge, binary and special files, a socket path that is a regular file, and peers that break the
protocol (closing mid-reply, garbage, an oversized frame)."""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import threading
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cml_common.messages.container_pb2 import ContainerStatus
from cml_common.messages.control_pb2 import DaemonToController

from ..conftest import BIN, CliResult, Daemon

pytestmark = pytest.mark.host

PROGS = ("control", "cml-control")
FATAL_LINE = re.compile(r"^\[(\d+)\] <FATAL> (.*)$")


def run(prog: str, sock: Path | str, *args: str, stdin: str | None = None, cwd: Path | None = None,
        timeout: float = 60, socket_first: bool = True) -> CliResult:
    argv = [str(BIN / prog), "-s", str(sock), *args] if socket_first else [str(BIN / prog), *args]
    p = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd)
    return CliResult(p.returncode, p.stdout, p.stderr)


def rc_for(prog: str, ok: bool) -> int:
    """The original exits 0 after any reply; cml-control says whether cmld agreed."""
    return 0 if prog == "control" or ok else 1


def create(d: Daemon, tmp: Path, name: str, extra: str = "") -> str:
    conf = tmp / f"{name}-{uuidlib.uuid4().hex[:6]}.conf"
    conf.write_text(f'name: "{name}"\nguest_os: "busybox"\n{extra}')
    r = run("cml-control", d.socket, "create", str(conf))
    assert r.rc == 0, r.out + r.err
    m = re.search(r'container_uuids: "([0-9a-f-]{36})"', r.out)
    assert m, r.out
    return m.group(1)


def names(d: Daemon) -> list[str]:
    return re.findall(r'name: "([^"]*)"', run("cml-control", d.socket, "list").out)


def assert_fatal(r: CliResult, message: str) -> None:
    """The original's FATAL: the message, then `Aborting...`, each as `[<pid>] <FATAL> ...`;
    then abort()."""
    assert r.rc == -signal.SIGABRT, (r.rc, r.err)
    lines = [ln for ln in r.err.splitlines() if FATAL_LINE.match(ln)]
    assert len(lines) == 2, r.err
    m1, m2 = FATAL_LINE.match(lines[0]), FATAL_LINE.match(lines[1])
    assert m1 and m2 and m1.group(2) == message and m2.group(2) == "Aborting..."
    assert m1.group(1) == m2.group(1)


# ------------------------------------------------------------------------------ device commands


@pytest.mark.parametrize("prog", PROGS)
def test_global_option_forms_and_listing(cmld: Daemon, tmp_path: Path, prog: str) -> None:
    create(cmld, tmp_path, "alpha")
    sock = str(cmld.socket)
    forms = [["-s", sock, "list"], [f"-s{sock}", "list"], [f"--socket={sock}", "list"], ["--socket", sock, "list"],
             [f"--so={sock}", "list"], ["-s", "/nonexistent", "-s", sock, "list"], ["-s", sock, "LIST"],
             ["-s", sock, "List", "extra", "words"]]
    for argv in forms:
        r = run(prog, "", *argv, socket_first=False)
        assert r.rc == 0 and r.out.startswith("code: CONTAINER_STATUS\n"), (argv, r.err)
        assert 'name: "alpha"' in r.out and 'name: "scd"' not in r.out, argv
    for extra in (["-s"], ["--system"], ["--sys"], ["--s"], ["extra", "-s"]):
        r = run(prog, sock, "list", *extra)
        assert r.rc == 0 and 'name: "scd"' in r.out and 'name: "tpm2d"' in r.out and 'name: "alpha"' in r.out, extra
    r = run(prog, sock, "--json", "list")
    assert r.rc == 0 and '"name": "alpha"' in r.out
    for cmd, want in (("get_provisioned", "device_is_provisioned: false"), ("device_stats", "mem_total:"),
                      ("list_guestos", "code: GUESTOS_CONFIGS_LIST"), ("reload", "response: CMD_OK")):
        r = run(prog, sock, cmd, "--ignored", "args")
        assert r.rc == 0 and want in r.out, (cmd, r.out, r.err)
    r = run(prog, sock, "destroy_system")  # CMD_OK first, as the original (no tpm2d here: nothing cleared)
    assert r.out == "code: RESPONSE\nresponse: CMD_OK\n" and r.rc == rc_for(prog, True)


@pytest.mark.parametrize("prog", PROGS)
def test_container_commands_take_their_arguments_by_position(cmld: Daemon, tmp_path: Path, prog: str) -> None:
    uuid = create(cmld, tmp_path, "beta")
    sock = cmld.socket
    for argv in (["state", "beta"], ["STATE", "beta"], ["state", "beta", "extra"], ["state", "beta", "--whatever"],
                 ["state", uuid], ["state", uuid.upper()], ["state", uuid.replace("-", "")]):
        r = run(prog, sock, *argv)
        assert r.rc == 0 and f'uuid: "{uuid}"' in r.out and "state: STOPPED" in r.out, (argv, r.err)
        assert r.out.count("container_status {") == 1
    r = run(prog, sock, "state", "scd")  # a unit resolves for state
    assert r.rc == 0 and 'name: "scd"' in r.out
    r = run(prog, sock, "config", "beta", "--whatever")
    assert r.rc == 0 and "code: CONTAINER_CONFIG" in r.out and 'name: "beta"' in r.out
    if prog == "control":
        assert "<INFO>  Retrying with name" in r.err  # a name, not a UUID: the original says so
    for argv, response in ((["freeze", "beta", "-x"], "CMD_FAILED"), (["unfreeze", "beta"], "CMD_FAILED"),
                           (["snapshot", "beta"], "CMD_UNSUPPORTED"), (["allow_audio", "beta"], "CMD_UNSUPPORTED"),
                           (["deny_audio", "beta"], "CMD_UNSUPPORTED"),
                           (["dev_access", "beta", "nonsense-rule", "extra"], "CMD_FAILED")):
        r = run(prog, sock, *argv)
        assert r.out.startswith(f"code: RESPONSE\nresponse: {response}\n"), (argv, r.out, r.err)
        assert r.rc == rc_for(prog, False), argv
    assert "malformed device rule 'nonsense-rule'" in cmld.log_text()  # the rule arrived, the extra word did not
    r = run(prog, sock, "ifaces", "beta", "extra")  # not running: no interfaces, as the original
    assert r.out == "code: CONTAINER_IFACES\n" and r.rc == 0, (r.out, r.err)
    new = tmp_path / "renamed.conf"
    new.write_text('name: "gamma"\nguest_os: "busybox"\nram_limit: 64\n')
    sig, cert = tmp_path / "renamed.sig", tmp_path / "renamed.cert"
    sig.write_bytes(b"sig")
    cert.write_bytes(b"cert")
    r = run(prog, sock, "update_config", "beta", str(new), str(sig), str(cert), "ignored")
    assert r.rc == 0 and 'name: "gamma"' in r.out
    assert names(cmld) == ["gamma"]
    # the CI's form: remove <c> --key=<pin>; the key is ignored, the container goes
    r = run(prog, sock, "remove", "gamma", "--key=whatever")
    assert r.rc == 0 and r.out == "code: RESPONSE\nresponse: CMD_OK\n" and "Abort" not in r.out + r.err
    assert names(cmld) == [] and not (cmld.base / "containers" / f"{uuid}.conf").exists()
    r = run(prog, sock, "remove", "gamma", "--key=whatever")
    if prog == "control":
        assert_fatal(r, "Container with provided uuid/name does not exist!")
        assert r.out == ""
    else:
        assert r.rc == 1 and "Container with provided uuid/name does not exist!" in r.err


@pytest.mark.parametrize("prog", PROGS)
def test_create_forms(cmld: Daemon, tmp_path: Path, prog: str) -> None:
    conf = tmp_path / "c.conf"
    sig, cert = tmp_path / "c.sig", tmp_path / "c.cert"
    sig.write_bytes(b"\x00signature\xff")
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    for i, extra in enumerate(([], [str(sig)], [str(sig), str(cert)], [str(sig), str(cert), "ignored"])):
        conf.write_text(f'name: "c{i}"\nguest_os: "busybox"\n')
        r = run(prog, cmld.socket, "create", str(conf), *extra)
        assert r.rc == 0 and f'name: "c{i}"' in r.out, (extra, r.err)  # this device does not check signatures
        if prog == "control":
            assert f"<INFO>  Creating container with cfg {conf} (len {conf.stat().st_size})." in r.err
    assert sorted(names(cmld)) == ["c0", "c1", "c2", "c3"]
    conf.write_text('name: "c0"\nguest_os: "busybox"\n')  # a duplicate: refused by cmld
    r = run(prog, cmld.socket, "create", str(conf))
    assert r.out == "code: CONTAINER_CONFIG\nerror_message: \"a container named \\\'c0\\\' exists\"\n"
    assert r.rc == rc_for(prog, False)


@pytest.mark.parametrize("prog", PROGS)
def test_iface_forms(cmld: Daemon, tmp_path: Path, prog: str) -> None:
    """With an interface name, cmld gets as far as the container (not running: "is STOPPED");
    without one it stops at the name: every form must deliver the name (the original loses it in
    `-i eth1`)."""
    create(cmld, tmp_path, "net")
    for cmd in ("assign_iface", "unassign_iface"):
        for form in (["--iface=eth1"], ["--iface", "eth1"], ["-ieth1"], ["-i", "eth1"], ["--if=eth1"],
                     ["--i", "eth1"], ["--iface=eth1", "--persistent"], ["-p", "--iface", "eth1"],
                     ["--pers", "-ieth1"], ["-pieth1"]):
            for argv in ([cmd, "net", *form], [cmd, *form, "net"]):
                r = run(prog, cmld.socket, *argv)
                assert r.out == 'code: RESPONSE\nresponse: CMD_FAILED\nerror_message: "container net is STOPPED"\n', \
                    (argv, r.out, r.err)
                assert r.rc == rc_for(prog, False)
    assert "without an interface name" not in cmld.log_text()


@pytest.mark.parametrize("prog", PROGS)
def test_retrieve_logs_forms(cmld: Daemon, tmp_path: Path, prog: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    r = run(prog, cmld.socket, "retrieve_logs", str(out))
    assert r.rc == 0 and r.out == "code: RESPONSE\nresponse: CMD_OK\n"
    assert any("cmld ready" in p.read_text() for p in out.iterdir())
    if prog == "control":
        assert f"<INFO>  Copy logs to {out}/" in r.err and "<INFO>  Received final fragment of logfile" in r.err
    for form in (["-r"], ["--remove"], ["--rem"], ["--r"]):
        for argv in (["retrieve_logs", str(out), *form], ["retrieve_logs", *form, str(out), "extra"]):
            old = cmld.log_dir / "cml-daemon.2000-01-01T00:00:00.000000+0000"
            old.write_text("old\n")
            r = run(prog, cmld.socket, *argv)
            assert r.rc == 0 and r.out == "code: RESPONSE\nresponse: CMD_OK\n", (argv, r.err)
            assert not old.exists(), argv  # remove_logs arrived
            assert (out / old.name).read_text().endswith("old\n")
    assert (cmld.log_dir / "cml-daemon.current").exists()


def test_provisioning_and_guestos_commands(cmld: Daemon, tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(os.urandom(300))
    for prog in PROGS:
        r = run(prog, cmld.socket, "push_guestos_config", str(junk), str(junk), str(junk), "extra")
        assert r.out.startswith("code: RESPONSE\nresponse: GUESTOS_MGR_INSTALL_FAILED\n")
        assert r.rc == rc_for(prog, False)
        r = run(prog, cmld.socket, "remove_guestos", "nosuch")
        assert r.out == "code: RESPONSE\nresponse: CMD_FAILED\n"
        r = run(prog, cmld.socket, "push_cert", str(junk))
        assert "DEVICE_CERT_ERROR" in r.out and r.rc == rc_for(prog, False)
        r = run(prog, cmld.socket, "pull_csr", str(tmp_path / "csr"))
        assert r.out == "" and not (tmp_path / "csr").exists()  # no scd here: no CSR
        assert "DEVICE_CSR_ERROR: " in r.err and r.rc == rc_for(prog, False)
    r = run("control", cmld.socket, "pull_csr", str(tmp_path / "csr"))
    assert re.search(r"^\[\d+\] <ERROR> DEVICE_CSR_ERROR: Device not in Provisioning mode!$", r.err, re.M), r.err
    r = run("control", cmld.socket, "set_provisioned")
    assert r.rc == 0 and r.out == "code: RESPONSE\nresponse: CMD_OK\n" and (cmld.base / "_cml_provisioned_").exists()
    r = run("control", cmld.socket, "get_provisioned")
    assert "device_is_provisioned: true" in r.out
    r = run("control", cmld.socket, "set_provisioned")
    assert r.rc == 0 and r.out == "code: RESPONSE\nresponse: CMD_UNSUPPORTED\n"
    r = run("cml-control", cmld.socket, "set_provisioned")
    assert r.rc == 1 and "cmld answered CMD_UNSUPPORTED" in r.err


# ------------------------------------------------------------------------------ usage errors


@pytest.mark.parametrize("argv,diagnostic", [
    (["list", "-x"], "list: invalid option -- 'x'"),
    (["LIST", "--bogus"], "LIST: unrecognized option '--bogus'"),
    (["start", "c", "--no-switch"], None),
    (["stop", "c", "--setup"], None),
    (["stop", "c", "-s"], "stop: invalid option -- 's'"),
    (["assign_iface", "c", "--iface"], "assign_iface: option '--iface' requires an argument"),
    (["assign_iface", "c"], None),
    (["frobnicate"], None),
    ([], None),
    (["start"], None),
    (["create"], None),
    (["ca_register", "a", "b"], None),
    (["run", "c"], None),
])
def test_usage_errors(cmld: Daemon, argv: list[str], diagnostic: str | None) -> None:
    r = run("control", cmld.socket, *argv)
    assert r.rc == 255 and r.out.startswith("\nUsage: ") and "commands:\n" in r.out
    assert r.err == (diagnostic + "\n" if diagnostic else "")
    r = run("cml-control", cmld.socket, *argv)
    assert r.rc == 2 and r.out == "" and r.err.startswith("cml-control: ")
    assert run("cml-control", cmld.socket, "list").rc == 0  # nothing reached the daemon, it serves on


def test_help(tmp_path: Path) -> None:
    for argv in (["-h"], ["--help"], ["--he"]):
        r = run("control", tmp_path / "nosock", *argv)  # the original prints its usage before it looks
        assert r.rc == 255 and r.out.startswith("\nUsage: ") and r.err == ""
        r = run("cml-control", tmp_path / "nosock", *argv)
        assert r.rc == 0 and "--wait" in r.out and "exit status" in r.out
    for argv in (["start", "c", "-h"], ["reboot", "--help"]):  # cml-control never acts on a help word
        r = run("cml-control", tmp_path / "nosock", *argv)
        assert r.rc == 0 and r.out.startswith("Usage: cml-control")


def test_retrieve_logs_without_a_directory(cmld: Daemon, tmp_path: Path) -> None:
    missing = tmp_path / "nodir"
    r = run("control", cmld.socket, "retrieve_logs", str(missing))
    assert r.rc == 255 and r.out.startswith("\nUsage: ")
    assert re.search(r"<INFO>  Directory does not exist\. Please specify existing directory", r.err)
    r = run("cml-control", cmld.socket, "retrieve_logs", str(missing))
    assert r.rc == 2 and "not an existing directory" in r.err


# ------------------------------------------------------------------------------ FATAL paths


def test_fatal_paths_abort_without_a_core_file(cmld: Daemon, tmp_path: Path) -> None:
    def unlimited_core() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    def control(*args: str, stdin: str | None = None, sock: Path | str = cmld.socket) -> CliResult:
        p = subprocess.run([str(BIN / "control"), "-s", str(sock), *args], input=stdin, capture_output=True,
                           text=True, timeout=30, check=False, cwd=tmp_path, preexec_fn=unlimited_core)
        return CliResult(p.returncode, p.stdout, p.stderr)

    create(cmld, tmp_path, "pinned")
    r = control("list", sock=tmp_path / "missing.sock")
    assert_fatal(r, f"Could not find socket file {tmp_path / 'missing.sock'}. Aborting.")
    assert "Aborting.\n\n[" in r.err  # the original's message ends in a newline of its own
    r = control("state", "nosuch")
    assert_fatal(r, "Container with provided uuid/name does not exist!")
    r = control("state", str(uuidlib.uuid4()))
    assert_fatal(r, "Container with provided uuid/name does not exist!")
    assert "Retrying with name" not in r.err  # a UUID is never taken for a name
    r = control("change_pin", "pinned", stdin="old\nnew\nother\n")
    assert_fatal(r, "Passwords don't match!")
    assert r.out == "Current Password: New Password: Re-enter New Password: "  # prompts on stdout
    r = control("create", str(tmp_path / "missing.conf"))
    assert_fatal(r, f"Error accessing container config file {tmp_path / 'missing.conf'}.")
    r = control("create", str(tmp_path))  # a directory: stat works, read does not
    assert_fatal(r, f"Error reading {tmp_path}. Aborting.")
    r = control("ca_register", str(tmp_path / "none.pem"))
    assert_fatal(r, f"Error accessing certificate file {tmp_path / 'none.pem'}.")
    assert not list(tmp_path.glob("core*"))
    r = run("cml-control", cmld.socket, "state", "nosuch")
    assert r.rc == 1 and r.err == "cml-control: Container with provided uuid/name does not exist!\n"
    r = run("cml-control", tmp_path / "missing.sock", "list")
    assert r.rc == 3 and "no control socket" in r.err


# ------------------------------------------------------------------------------ hostile input


def test_hostile_files(cmld: Daemon, tmp_path: Path) -> None:
    huge = tmp_path / "huge.conf"
    with huge.open("wb") as f:
        f.truncate(65 * 1024 * 1024)  # sparse: larger than any message
    binary = tmp_path / "binary.conf"
    binary.write_bytes(os.urandom(4096))
    r = run("control", cmld.socket, "create", str(huge))
    assert_fatal(r, "error sending protobuf message")
    assert "<ERROR> Packed message exceeds PROTOBUF_MAX_MESSAGE_SIZE" in r.err
    r = run("cml-control", cmld.socket, "create", str(huge))
    assert r.rc == 1 and "too large" in r.err
    r = run("cml-control", cmld.socket, "create", "/dev/zero")  # no size, no end
    assert r.rc == 1 and "too large" in r.err
    for prog in PROGS:
        r = run(prog, cmld.socket, "create", str(binary))
        assert r.out.startswith("code: CONTAINER_CONFIG\nerror_message: ") and "not UTF-8" in r.out
        assert "uuids" not in r.out and r.rc == rc_for(prog, False)
        r = run(prog, cmld.socket, "create", "/dev/null")
        assert r.out == "code: CONTAINER_CONFIG\nerror_message: \"no container_config_file given\"\n"
    assert names(cmld) == [] and not list((cmld.base / "containers").glob("*.conf"))
    assert run("cml-control", cmld.socket, "list").rc == 0


def test_socket_path_is_a_regular_file(tmp_path: Path) -> None:
    f = tmp_path / "not-a-socket"
    f.write_text("x")
    r = run("control", f, "list")
    assert_fatal(r, f"Failed to create and connect to socket {f}!")
    assert f"<WARN>  Failed to connect UNIX socket to {f}. (111: Connection refused)" in r.err
    r = run("cml-control", f, "list")
    assert r.rc == 3 and "Connection refused" in r.err


class HostilePeer:
    """A socket server that answers each request with `reply` bytes and then closes."""

    def __init__(self, path: Path, reply: bytes, replies_before: list[bytes] | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.reply = reply
        self.before = replies_before or []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                for answer in [*self.before, self.reply]:
                    header = conn.recv(4)
                    if len(header) < 4:
                        break
                    n = int.from_bytes(header, "big")
                    while n:
                        n -= len(conn.recv(n))
                    conn.sendall(answer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    peers: list[HostilePeer] = []

    def make(reply: bytes, before: list[bytes] | None = None) -> Path:
        path = tmp_path / f"peer{len(peers)}.sock"
        peers.append(HostilePeer(path, reply, before))
        return path

    yield make
    for p in peers:
        p.close()


STATUS_REPLY = DaemonToController(code=DaemonToController.CONTAINER_STATUS, container_status=[ContainerStatus(
    uuid="u", name="demo", type=1, state=1, uptime=0, created=0, guestos="g", trust_level=3, cryptfs_mode=1,
)]).SerializeToString()


@pytest.mark.parametrize("case,reply,control_preface,ours", [
    ("closed before replying", b"", None, "closed the connection without a reply"),
    ("closed mid-header", b"\x00\x00", "<ERROR> Protocol violation!", "after 2 of 4 header bytes"),
    ("closed mid-body", b"\x00\x00\x01\x00" + b"\x08\x03" + b"\x00" * 50,
     "<ERROR> Dropped protobuf message (expected length : 52 bytes read != 256 bytes expected)",
     "after 52 of 256 body bytes"),
    ("oversized frame", b"\x04\x00\x00\x00", None, "the limit is"),
    ("garbage", b"\x00\x00\x00\x05\xff\xff\xff\xff\xff", "<WARN>  Failed to parse received protobuf message",
     "invalid reply"),
    ("no code", b"\x00\x00\x00\x02\x30\x01", "<WARN>  Failed to parse received protobuf message", "invalid reply"),
])
def test_broken_peers(peer: Callable[..., Path], case: str, reply: bytes, control_preface: str | None,
                      ours: str) -> None:
    sock = peer(reply)
    r = run("control", sock, "list")
    assert_fatal(r, "error receiving message")
    if control_preface:
        assert control_preface in r.err, r.err
    r = run("cml-control", sock, "list")
    assert r.rc == 3 and ours in r.err, (case, r.err)
    # the same in the middle of a command: the reply to the container lookup was fine
    sock = peer(reply, [len(STATUS_REPLY).to_bytes(4, "big") + STATUS_REPLY])
    r = run("cml-control", sock, "state", "demo")
    assert r.rc == 3 and ours in r.err, (case, r.err)


def test_a_silent_peer_times_out(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(1)
    try:
        r = run("cml-control", path, "--timeout", "0.5", "list", timeout=20)
        assert r.rc == 3 and "did not answer within 0.5 s" in r.err
        r = run("control", path, "--timeout=0.5", "list", timeout=20)
        assert_fatal(r, "error receiving message")
        assert "<ERROR> cmld did not answer within 0.5 s" in r.err
    finally:
        s.close()


def test_stdout_closed(cmld: Daemon) -> None:
    """`control list | head -0`: the original dies of SIGPIPE; cml-control ends quietly."""
    for prog, want in (("control", -signal.SIGPIPE), ("cml-control", 0)):
        r_fd, w_fd = os.pipe()
        os.close(r_fd)
        try:
            p = subprocess.run([str(BIN / prog), "-s", str(cmld.socket), "list"], stdout=w_fd,
                               stderr=subprocess.PIPE, timeout=30, check=False)
        finally:
            os.close(w_fd)
        assert p.returncode == want, (prog, p.returncode, p.stderr)
        assert b"Traceback" not in p.stderr


def test_daemon_serves_on_after_hostile_clients(cmld: Daemon, tmp_path: Path) -> None:
    for argv in (["start", "nosuch", "--key=x"], ["create", "/dev/null"], ["list", "-x"], ["state", "\x01\x02"],
                 ["state", "a" * 5000], ["dev_access", "x", "y"]):
        run("control", cmld.socket, *argv)
        run("cml-control", cmld.socket, *argv)
    assert cmld.alive()
    assert run("control", cmld.socket, "list").rc == 0



def test_pin_reader_container(cmld: Daemon, tmp_path: Path) -> None:
    """A container whose PIN is typed on a PIN pad: the original's notes go to stdout, before the
    reply; `--key` is sent anyway, with a warning."""
    create(cmld, tmp_path, "pad", "usb_pin_entry: true\ntoken_type: USB\n")
    r = run("control", cmld.socket, "start", "pad", "--key=1234")
    assert r.rc == 0 and r.out.startswith(
        "WARN: argument --key will be ignored for containers configured with USB pin reader\n"
        "Please Enter your password via pin reader\ncode: RESPONSE\n"), r.out
    r = run("cml-control", cmld.socket, "start", "pad")
    assert r.rc == 1 and r.out.startswith("code: RESPONSE\n") and "Please Enter your password via pin reader" in r.err
    assert "Password:" not in r.out + r.err
