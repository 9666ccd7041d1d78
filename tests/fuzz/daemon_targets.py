"""The daemon campaigns (see daemons.py) and the worlds they run in: real cmld, scd and tpm2d
processes in a temporary directory, stopped by PID on every path.

cmld runs in a network namespace of its own (`unshare --net`): a fuzzed GuestOS push may name an
http:// URL, and no fuzzed input may ever reach a network beyond this machine's loopback.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import Message

from cml_common import framing
from cml_common.messages.attestation_pb2 import BASIC, RemoteToTpm2d, Tpm2dToRemote
from cml_common.messages.c_service_pb2 import CmldToServiceMessage, ServiceToCmldMessage
from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController
from cml_common.messages.scd_pb2 import DaemonToToken, HashAlgo, TokenToDaemon, TokenType
from cml_common.messages.tpm2d_pb2 import ControllerToTpm, TpmToController
from cmld.modules.service import MAX_BAD_FRAMES
from tests.conftest import BIN, HOSTED_DEVICE_CONF, Daemon, DaemonFactory, wait_for_socket
from tests.fuzz import protogen
from tests.fuzz.daemons import Campaign, Conn, Finding, LogWatch, sha256, tcp_conn, unix_conn
from tests.host import containers

C, D = ControllerToDaemon, DaemonToController
S2C, C2S = ServiceToCmldMessage, CmldToServiceMessage
TOKEN_UUID = "3f1c7a52-1d6e-4b8a-9a0f-6c2b5e4d7a19"
# exec arguments a campaign may send into a real container (the command runs there)
SAFE_ARGS = ("true", "echo", "fuzz", "sh", "-c", "exit 3", "cat", "/proc/self/status", "/no/such/program", "sleep",
             "0.1", "")


def daemon_logs(d: Daemon, stderr: Path) -> LogWatch:
    return LogWatch(lambda: [*sorted(d.log_dir.glob("cml-*.2*")), stderr])


def _collect_until(conn: Conn, probe_code: int, count: int, code_of: type[Message]) -> list[bytes] | None:
    """Frames up to the `count`-th with code `probe_code`; the frames before the last are the
    answers to the input. None when the connection closed."""
    out: list[bytes] = []
    seen = 0
    while seen < count:
        body = conn.recv()
        if body is None:
            return None
        try:
            m = framing.parse(code_of, body)
        except framing.MessageError:
            out.append(body)
            continue
        if m.code == probe_code:  # type: ignore[attr-defined]
            seen += 1
            if seen == count:
                return out
        out.append(body)
    return out


# ------------------------------------------------------------------------------ cmld


@dataclass
class CmldWorld:
    factory: DaemonFactory
    daemon: Daemon
    stderr: Path
    uuid: str | None = None  # the running container's
    name: str = "fuzzc"

    @property
    def run_dir(self) -> Path:
        return self.factory.tmp / "cmld-run"

    def init_pid(self) -> int:
        assert self.uuid is not None
        rec = json.loads((self.run_dir / "records" / f"{self.uuid}.json").read_text())
        return int(rec["init_pid"])

    def service_socket(self) -> Path:
        return Path(f"/proc/{self.init_pid()}/root/run/socket/cml-service")

    def ensure_running(self) -> None:
        if self.uuid is None:
            return
        r = containers.cli(self.daemon.socket, "state", self.name)
        if "state:" not in r.out:  # a fuzzed REMOVE_CONTAINER took it: create it again
            containers.create(self.daemon, self.factory.tmp, self.name)
            self.uuid = containers.uuid_of(self.daemon, self.name)
        st = containers.state(self.daemon, self.name)
        if st == "RUNNING":
            return
        if st in ("STOPPED", "ZOMBIE"):
            if st == "ZOMBIE":
                containers.cli(self.daemon.socket, "wipe", self.name)
            containers.start(self.daemon, self.name)
        containers.wait_state(self.daemon, self.name, "RUNNING", timeout=60)


def launch_cmld_netns(factory: DaemonFactory) -> tuple[Daemon, Path]:
    tmp = factory.tmp
    base = tmp / "cmld-base"
    base.mkdir(parents=True, exist_ok=True)
    if not (base / "device.conf").exists():
        (base / "device.conf").write_text(HOSTED_DEVICE_CONF)
    sock, logs, stderr = tmp / "cmld.sock", tmp / "cmld-logs", tmp / "cmld.stderr"
    cmd = ["unshare", "--net", "--", str(BIN / "cmld"), "--foreground", "--base-dir", str(base), "--socket", str(sock),
           "--log-dir", str(logs), "--scd-socket", str(tmp / "scd.sock"), "--tpm2d-socket", str(tmp / "tpm2d.sock"),
           "--run-dir", str(tmp / "cmld-run"), "--stop-timeout", "5"]
    with stderr.open("ab") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    d = Daemon(proc, sock, base, logs)
    factory.started.append(d)
    wait_for_socket(sock, proc, stderr_file=stderr)
    return d, stderr


@contextlib.contextmanager
def cmld_world(tmp: Path, *, with_container: bool) -> Iterator[CmldWorld]:
    factory = DaemonFactory(tmp)
    try:
        if with_container:
            containers.install_guestos(containers.demo_guestos(tmp / "guestos-cache"), tmp / "cmld-base")
        d, stderr = launch_cmld_netns(factory)
        world = CmldWorld(factory, d, stderr)
        if with_container:
            containers.create(d, tmp, world.name)
            world.uuid = containers.uuid_of(d, world.name)
            world.ensure_running()
        yield world
    finally:
        factory.stop_all()


class CmldControl(Campaign):
    """cmld's control socket: every command, a probe (LIST_GUESTOS_CONFIGS) behind each input."""

    name = "cmld_control"
    request_type = ControllerToDaemon
    reply_type = DaemonToController
    code_field = "command"

    def __init__(self, rng: random.Random, world: CmldWorld, *, provisioned_phase: bool = False) -> None:
        self.world = world
        self.provisioned_phase = provisioned_phase
        if world.uuid is not None:
            self.name = "cmld_running"
        super().__init__(rng, daemon_logs(world.daemon, world.stderr), lambda: world.daemon.alive())
        self.stats.target = self.name + ("_prov" if provisioned_phase else "")

    def corpus_name(self) -> str:
        return "msg_control"

    def overrides(self) -> protogen.Overrides:
        ov = protogen.Overrides()
        if self.world.uuid is not None:
            world = self.world
            ov.by_field["container_uuids"] = (0.6, lambda r: r.choice((world.uuid or "", world.name)))
        ov.by_field["exec_args"] = (0.95, lambda r: r.choice(SAFE_ARGS))
        return ov

    def reject(self, req: Message | None) -> bool:
        if not isinstance(req, ControllerToDaemon):
            return False
        if req.command == C.SET_PROVISIONED and not self.provisioned_phase:
            return True  # one-way: the provisioned phase sends it once, first
        if req.command == C.WIPE_DEVICE and self.world.uuid is not None:
            return True  # would take the GuestOS the container needs; fuzzed without a container
        # exec arguments only from the safe list (a container is a real system)
        return req.command == C.CONTAINER_EXEC_CMD and any(a not in SAFE_ARGS for a in req.exec_args)

    def connect(self) -> Conn:
        return unix_conn(self.world.daemon.socket, timeout=self.reply_timeout)

    def exchange(self, conn: Conn, body: bytes, req: Message | None) -> list[bytes] | None:
        conn.send(body)
        conn.send(C(command=C.LIST_GUESTOS_CONFIGS).SerializeToString())
        count = 2 if isinstance(req, ControllerToDaemon) and req.command == C.LIST_GUESTOS_CONFIGS else 1
        frames = _collect_until(conn, D.GUESTOS_CONFIGS_LIST, count, DaemonToController)
        if frames is not None and req is None:
            answers = [framing.parse(D, f) for f in frames]
            if not any(a.code == D.RESPONSE and a.response in (D.CMD_FAILED, D.CMD_UNSUPPORTED) for a in answers):
                raise Finding(self.name, "a malformed request got no CMD_FAILED/CMD_UNSUPPORTED", body)
        return frames

    def health(self) -> None:
        with contextlib.closing(self.connect()) as c:
            c.send(C(command=C.LIST_CONTAINERS).SerializeToString())
            while True:
                body = c.recv()
                if body is None:
                    raise Finding(self.name, "health probe: LIST_CONTAINERS not answered", None)
                if framing.parse(D, body).code == D.CONTAINERS_LIST:
                    return

    def after_batch(self) -> None:
        if self.conn is not None:  # exec sessions end with their connection
            self.conn.close()
            self.conn = None
        self.world.ensure_running()


class CmldService(Campaign):
    """The in-container service socket of a running container, reached through its init's root."""

    name = "cmld_service"
    request_type = ServiceToCmldMessage
    reply_type = CmldToServiceMessage
    malformed_budget = MAX_BAD_FRAMES  # the service socket closes a connection after so many

    def __init__(self, rng: random.Random, world: CmldWorld) -> None:
        self.world = world
        super().__init__(rng, daemon_logs(world.daemon, world.stderr), lambda: world.daemon.alive())

    def corpus_name(self) -> str:
        return "msg_service"

    def connect(self) -> Conn:
        return unix_conn(self.world.service_socket(), timeout=self.reply_timeout)

    def exchange(self, conn: Conn, body: bytes, req: Message | None) -> list[bytes] | None:
        conn.send(body)
        conn.send(S2C(code=S2C.CONTAINER_CFG_NAME_REQ).SerializeToString())
        count = 2 if isinstance(req, ServiceToCmldMessage) and req.code == S2C.CONTAINER_CFG_NAME_REQ else 1
        frames = _collect_until(conn, C2S.CONTAINER_CFG_NAME, count, CmldToServiceMessage)
        return frames

    def health(self) -> None:
        with contextlib.closing(self.connect()) as c:
            c.send(S2C(code=S2C.CONTAINER_CFG_NAME_REQ).SerializeToString())
            body = c.recv()
            if body is None or framing.parse(C2S, body).container_cfg_name != self.world.name:
                raise Finding(self.name, "health probe: CONTAINER_CFG_NAME_REQ not answered with the name", None)

    def after_batch(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.world.ensure_running()


# ------------------------------------------------------------------------------ scd


@contextlib.contextmanager
def scd_world(tmp: Path) -> Iterator[tuple[Daemon, Path]]:
    factory = DaemonFactory(tmp)
    try:
        base = tmp / "scd-base"
        (base / "tokens").mkdir(parents=True, exist_ok=True)
        d = factory.launch("scd", "scd", base=base, kind=socket.SOCK_SEQPACKET)
        yield d, tmp / "scd.stderr"
    finally:
        factory.stop_all()


class Scd(Campaign):
    name = "scd"
    request_type = DaemonToToken
    reply_type = TokenToDaemon
    seqpacket = True
    malformed_closes = True

    def __init__(self, rng: random.Random, daemon: Daemon, stderr: Path) -> None:
        self.daemon = daemon
        super().__init__(rng, daemon_logs(daemon, stderr), daemon.alive)

    def overrides(self) -> protogen.Overrides:
        ov = protogen.Overrides()
        ov.by_field["token_uuid"] = (0.6, lambda r: TOKEN_UUID)
        ov.by_field["token_type"] = (0.6, lambda r: TokenType.SOFT)
        ov.by_field["token_pin"] = (0.3, lambda r: "trustme")
        return ov

    def connect(self) -> Conn:
        return unix_conn(self.daemon.socket, seqpacket=True, timeout=self.reply_timeout)

    def health(self) -> None:
        with contextlib.closing(self.connect()) as c:
            c.send(DaemonToToken(code=DaemonToToken.CRYPTO_HASH_BUF, hash_algo=HashAlgo.SHA256,
                                 hash_buf=b"fuzz probe").SerializeToString())
            body = c.recv()
            if body is None or framing.parse(TokenToDaemon, body).hash_value != sha256(b"fuzz probe"):
                raise Finding(self.name, "health probe: CRYPTO_HASH_BUF not answered with the digest", None)


# ------------------------------------------------------------------------------ tpm2d


@dataclass
class Tpm2dWorld:
    daemon: Daemon
    stderr: Path
    port: int


@contextlib.contextmanager
def tpm2d_world(tmp: Path) -> Iterator[Tpm2dWorld]:
    from tests.host import tpm2dlib
    from tests.host.swtpmlib import running_swtpm

    factory = DaemonFactory(tmp)
    with running_swtpm(tmp / "swtpm") as tpm:
        try:
            t = tpm2dlib.launch(factory, tpm)
            yield Tpm2dWorld(t.daemon, tmp / "tpm2d.stderr", t.port)
        finally:
            factory.stop_all()


class Tpm2dControl(Campaign):
    name = "tpm2d_control"
    request_type = ControllerToTpm
    reply_type = TpmToController

    def __init__(self, rng: random.Random, world: Tpm2dWorld) -> None:
        self.world = world
        super().__init__(rng, daemon_logs(world.daemon, world.stderr), world.daemon.alive)

    def corpus_name(self) -> str:
        return "msg_tpm2d"

    def overrides(self) -> protogen.Overrides:
        return protogen.Overrides(excluded_enum_values={"code": frozenset({ControllerToTpm.EXIT})})

    def reject(self, req: Message | None) -> bool:
        return isinstance(req, ControllerToTpm) and req.code == ControllerToTpm.EXIT  # stops tpm2d, by design

    def connect(self) -> Conn:
        return unix_conn(self.world.daemon.socket, timeout=self.reply_timeout)

    def health(self) -> None:
        with contextlib.closing(self.connect()) as c:
            c.send(ControllerToTpm(code=ControllerToTpm.RANDOM_REQ, rand_size=8).SerializeToString())
            body = c.recv()
            if body is None or len(framing.parse(TpmToController, body).rand_data) != 16:
                raise Finding(self.name, "health probe: RANDOM_REQ not answered with 8 bytes", None)


class Tpm2dRemote(Campaign):
    name = "tpm2d_remote"
    request_type = RemoteToTpm2d
    reply_type = Tpm2dToRemote

    def __init__(self, rng: random.Random, world: Tpm2dWorld) -> None:
        self.world = world
        super().__init__(rng, daemon_logs(world.daemon, world.stderr), world.daemon.alive)

    def corpus_name(self) -> str:
        return "msg_remote"

    def connect(self) -> Conn:
        return tcp_conn(self.world.port, timeout=self.reply_timeout)

    def health(self) -> None:
        with contextlib.closing(self.connect()) as c:
            c.send(RemoteToTpm2d(code=RemoteToTpm2d.ATTESTATION_REQ, atype=BASIC,
                                 qualifyingData=b"n" * 32).SerializeToString())
            body = c.recv()
            if body is None or framing.parse(Tpm2dToRemote, body).code != Tpm2dToRemote.ATTESTATION_RES:
                raise Finding(self.name, "health probe: ATTESTATION_REQ not answered", None)
