"""Attacks on the unprivileged control socket that cmld binds into the containers of a GuestOS
with `feature_install_guest` (`/run/socket/cml-control`, modules/control_socket.py). From inside
such a container, as its root, with the real protocol (surfatk writes the frames the test built):
every privileged command, the one command that does something (PUSH_GUESTOS_CONFIG) with an
unsigned config, hostile frames and a connection flood.

The controls: LIST_GUESTOS_CONFIGS is answered on the same connection (so a refusal is cmld's
verdict, not a dead channel), and the very config the attacker pushes installs when the operator
pushes it over the host socket (so a refused push is refused for where it came from)."""

from __future__ import annotations

import hashlib
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cml_common.framing import parse, recv_frame, send_frame, serialize
from cml_common.messages.control_pb2 import ControllerToDaemon as C
from cml_common.messages.control_pb2 import DaemonToController as D
from cml_common.messages.guestos_pb2 import GuestOSConfig, GuestOSMount
from cml_common.textconfig import to_text
from cmld.control.access import UNPRIVILEGED
from cmld.guestos.install import hardware

from .arena import MODES, Arena
from .conftest import Judge, modes
from .daemon import control_status, log_size
from .guestos import GUESTOS, INSTALLOS
from .surfaces import INSIDE_SOCKET, SURFATK, answer, frame, put_surfatk, replies, surf
from .test_depletion import LOG_BUDGET

PUSHED = "atkpush"


@pytest.fixture(scope="module")
def installers(arena: Arena) -> Iterator[dict[str, str]]:
    """One feature_install_guest container per user-namespace mode, with surfatk in it."""
    names = {mode: f"ins-{'u' if mode == 'userns' else 'n'}" for mode in MODES}
    try:
        for mode, name in names.items():
            arena.create(name, userns=(mode == "userns"), guestos=INSTALLOS, ram_limit=64)
            assert arena.start_container(name) == "RUNNING"
            put_surfatk(arena, name)
        yield names
    finally:
        for name in names.values():
            arena.cli(arena.d, "remove", name)


def _state(arena: Arena) -> dict[str, object]:
    """What a privileged command would change: containers and their states, their configs, the
    GuestOSes, the trust anchors."""
    base = arena.base
    return {
        "states": control_status(arena.d.socket),
        "configs": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (base / "containers").glob("*.conf")},
        "guestos": sorted(p.name for p in (base / "operatingsystems").iterdir()),
        "tokens": sorted(str(p.relative_to(base)) for p in (base / "tokens").rglob("*")) if (base / "tokens").exists()
        else [],
    }


def _privileged_requests(arena: Arena) -> list[C]:
    """Every command of the protocol that the unprivileged socket must refuse, aimed at the
    victim where it takes a container, with the fields a real request would carry."""
    victim = arena.victim_uuid
    conf = (arena.base / "containers" / f"{victim}.conf").read_bytes()
    reqs = []
    for value in C.Command.values():
        if value in UNPRIVILEGED:
            continue
        r = C(command=value, container_uuids=[victim])  # type: ignore[arg-type]
        name = C.Command.Name(value)
        if name in ("CREATE_CONTAINER", "CONTAINER_UPDATE_CONFIG"):
            r.container_config_file = conf.replace(b'name: "victim"', b'name: "victim2"')
        elif name == "CONTAINER_EXEC_CMD":
            r.exec_command = "/bin/sh"
            r.exec_args.extend(["/bin/sh", "-c", "echo owned > /data/canary"])
        elif name == "REMOVE_GUESTOS":
            r.guestos_name = GUESTOS
        elif name == "REGISTER_NEWCA":
            r.guestos_rootcert = b"-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n"
        elif name == "CONTAINER_ASSIGNIFACE":
            r.assign_iface_params.iface_name = "lo"
        reqs.append(r)
    return reqs


@modes()
def test_execution_install_guest_privileged_commands(arena: Arena, installers: dict[str, str], mode: str,
                                                    judge: Judge, unaffected: Callable[[], None]) -> None:
    """Start/stop/remove/wipe the victim, read its config, run a command in it, update it,
    device commands, reboot/destroy/wipe the device, new CAs, provisioning...: all over one
    connection of the unprivileged socket, after a LIST_GUESTOS_CONFIGS that must be served."""
    reqs = _privileged_requests(arena)
    before = _state(arena)
    out = surf(arena, installers[mode], "sock", INSIDE_SOCKET, frame(C(command=C.LIST_GUESTOS_CONFIGS)).hex(),
               *(frame(r).hex() for r in reqs))
    got = replies(out)
    assert got and got[0].code == D.GUESTOS_CONFIGS_LIST, f"the control request was not served: {out[-500:]}"
    answers = [answer(m) for m in got[1:]]
    after = _state(arena)
    served = [f"{C.Command.Name(r.command)}->{a}" for r, a in zip(reqs, answers, strict=False)
              if a != "CMD_UNSUPPORTED"]
    if served or after != before:
        judge.succeeded(f"served: {served}; changed: {[k for k in before if before[k] != after[k]]}")
    if len(answers) != len(reqs):
        raise AssertionError(f"{len(reqs)} requests, {len(answers)} answers: {out[-500:]}")
    judge.blocked(f"{len(reqs)} privileged commands, each CMD_UNSUPPORTED; containers, configs, GuestOSes and "
                  "trust anchors unchanged (LIST_GUESTOS_CONFIGS served on the same connection)")
    unaffected()


def _pushed_config(url: str, data: bytes, version: int = 1) -> bytes:
    """A GuestOS config with one image of `data` and that update URL."""
    cfg = GuestOSConfig(name=PUSHED, version=version, hardware=hardware(), update_base_url=url)
    cfg.description.en = "pushed by the attack suite"
    cfg.mounts.append(GuestOSMount(image_file="payload", mount_point="/payload", fs_type="squashfs",
                                   mount_type=GuestOSMount.SHARED, image_size=len(data),
                                   image_sha2_256=hashlib.sha256(data).hexdigest()))
    return to_text(cfg).encode()


def _plant(root: Path, data: bytes) -> None:
    """The image where a relative `file://tmp/up` URL points, inside the container's root."""
    d = root / "tmp/up/operatingsystems" / hardware() / f"{PUSHED}-1"
    d.mkdir(parents=True, exist_ok=True)
    (d / "payload.img").write_bytes(data)


def _host_push(arena: Arena, raw: bytes, sig: bytes = b"", cert: bytes = b"", sock: Path | None = None) -> list[str]:
    """PUSH_GUESTOS_CONFIG over the host socket (the operator): the answers until the last."""
    got = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(str(sock or arena.d.socket))
        send_frame(s, serialize(C(command=C.PUSH_GUESTOS_CONFIG, guestos_config_file=raw, guestos_config_signature=sig,
                                  guestos_config_certificate=cert)))
        while True:
            body = recv_frame(s)
            if body is None:
                break
            got.append(answer(parse(D, body)))
            if got[-1] != "GUESTOS_MGR_INSTALL_STARTED":
                break
    return got


def _remove_pushed(arena: Arena) -> None:
    if any(p.name.startswith(f"{PUSHED}-") for p in (arena.base / "operatingsystems").iterdir()):
        r = arena.cli(arena.d, "remove_guestos", PUSHED)
        assert r.rc == 0, r.out + r.err


@modes()
def test_modification_install_guest_unsigned_push(arena: Arena, installers: dict[str, str], mode: str,
                                                 judge: Judge, unaffected: Callable[[], None]) -> None:
    """An unsigned GuestOS config pushed from inside, its image in the container's own files
    (`file://tmp/up`, resolved in its root): installed, it would be a GuestOS the attacker wrote
    (named like another container's GuestOS, a new version of it: code in that container at its
    next start). The arena's device.conf has `signed_configs: false` (hosted development)."""
    pid = put_surfatk(arena, installers[mode])
    data = secrets.token_bytes(4096)
    _plant(Path(f"/proc/{pid}/root"), data)
    raw = _pushed_config("file://tmp/up", data)
    try:
        out = surf(arena, installers[mode], "sock", INSIDE_SOCKET,
                   frame(C(command=C.PUSH_GUESTOS_CONFIG, guestos_config_file=raw)).hex())
        got = replies(out)
        answers = [answer(m) for m in got]
        why = " ".join(m.error_message for m in got)
        installed = [p.name for p in (arena.base / "operatingsystems").iterdir() if p.name.startswith(PUSHED)]
        if installed or "GUESTOS_MGR_INSTALL_COMPLETED" in answers:
            judge.succeeded(f"unsigned push from inside: {answers}, installed {installed}")
        assert answers == ["GUESTOS_MGR_INSTALL_FAILED"] and "must be signed" in why, (answers, why)
        judge.blocked(f"unsigned push from inside: {answers[0]} ({why}), nothing installed")
        # the control: the same config, pushed by the operator, installs (from the same files)
        ctl = _host_push(arena, _pushed_config(f"file:///proc/{pid}/root/tmp/up", data))
        assert ctl[-1] == "GUESTOS_MGR_INSTALL_COMPLETED", ctl
        judge.blocked(f"control: the operator's push of it over the host socket: {ctl[-1]}")
    finally:
        _remove_pushed(arena)
    unaffected()


@modes()
def test_disclosure_install_guest_host_file_url(arena: Arena, installers: dict[str, str], mode: str,
                                               judge: Judge, unaffected: Callable[[], None]) -> None:
    """A push whose update URL names a host path (`file:///...`) or the network (`http://`):
    cmld would open a file of the host, or fetch on the host's network, for a container. The
    config states the size and hash of the host's secret: a push that completes, or an answer
    that tells the size or hash cmld found, discloses the file. The refusal must be for the URL
    (checked before the signature: this test does not lean on the unsigned-push refusal).
    Before the fix the file:// push completed: the host's secret became an image of a GuestOS."""
    secret = (arena.hostdir / "secret.txt").read_bytes()
    tree = arena.root / "urltree" / "operatingsystems" / hardware() / f"{PUSHED}-1"
    tree.mkdir(parents=True, exist_ok=True)
    (tree / "payload.img").unlink(missing_ok=True)
    (tree / "payload.img").symlink_to(arena.hostdir / "secret.txt")
    found = []
    try:
        for url in (f"file://{arena.root}/urltree", "http://127.0.0.1:1/"):
            raw = _pushed_config(url, secret)
            out = surf(arena, installers[mode], "sock", INSIDE_SOCKET,
                       frame(C(command=C.PUSH_GUESTOS_CONFIG, guestos_config_file=raw)).hex())
            got = replies(out)
            answers = [answer(m) for m in got]
            text = " ".join(m.error_message for m in got)
            if "GUESTOS_MGR_INSTALL_COMPLETED" in answers or "SHA-256" in text or "bytes" in text:
                judge.succeeded(f"{url}: {answers} {text}")
            assert answers == ["GUESTOS_MGR_INSTALL_FAILED"] and "update_base_url" in text, (answers, text)
            found.append(f"{url}: {answers[0]} ({text[:60]}...)")
        judge.blocked("; ".join(found))
    finally:
        _remove_pushed(arena)
        (tree / "payload.img").unlink(missing_ok=True)
    unaffected()


@modes()
def test_depletion_install_guest_bad_frames_and_flood(arena: Arena, installers: dict[str, str], mode: str,
                                                     judge: Judge, unaffected: Callable[[], None]) -> None:
    """Hostile frames on the unprivileged socket (a length at the 64 MiB limit with 10 bytes
    behind it, a length past it, a body that is not protobuf, an empty body, a truncated
    length), then as many idle connections as it takes: cmld must keep serving the host socket
    meanwhile, and LIST_GUESTOS_CONFIGS afterwards."""
    name = installers[mode]
    notes = []
    for chunk in ("03ffffff" + "00" * 10, "7fffffff" + "41" * 16, "00000005ffffffffff", "00000000", "0000"):
        out = surf(arena, name, "sock", INSIDE_SOCKET, chunk)
        notes.append(f"{chunk[:8]}: {' '.join(answer(m) for m in replies(out)) or out.split()[-1]}")
    states: dict[str, str] = {}
    errors: list[BaseException] = []

    def probe() -> None:
        try:
            for _ in range(6):
                states.update(control_status(arena.d.socket, timeout=10))
                threading.Event().wait(0.5)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=probe)
    log_before = log_size(arena.d)
    t.start()
    # 1000 idle connections: four times what the socket serves at once (max_clients 256)
    r = arena.exec(name, SURFATK, "flood", INSIDE_SOCKET, "1000", frame(C(command=C.LIST_GUESTOS_CONFIGS)).hex(),
                   "3", timeout=120)
    t.join()
    out = r.out
    opened = next((ln for ln in out.splitlines() if ln.startswith("opened ")), f"flood: {out[-200:]} {r.err[-200:]}")
    served = next((ln for ln in out.splitlines() if ln.startswith(("served", "starved"))), "?")
    logged = log_size(arena.d) - log_before
    after = replies(surf(arena, name, "sock", INSIDE_SOCKET, frame(C(command=C.LIST_GUESTOS_CONFIGS)).hex()))
    if errors or states.get(arena.victim) != "RUNNING":
        judge.succeeded(f"{opened}: the host socket stopped answering during the flood: {errors}")
    if not after or after[0].code != D.GUESTOS_CONFIGS_LIST:
        judge.succeeded(f"{opened}: the unprivileged socket does not serve after the attack")
    if logged > LOG_BUDGET:
        judge.succeeded(f"{opened}: {logged} bytes of cmld log for it (a line per refused connection)")
    judge.blocked(f"{'; '.join(notes)}; {opened}, then {served.split()[0]} on it; the host socket answered "
                  f"throughout; {logged} bytes of log; served again afterwards")
    unaffected()
