"""cmld: the container management daemon."""

from __future__ import annotations

import argparse
import asyncio
import grp
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from cml_common import daemon_runner, paths
from cml_common.daemon_args import common_parser
from cml_common.messages.container_pb2 import ContainerState
from cmld.audit import events
from cmld.audit.auditor import Auditor
from cmld.audit.config import build_auditor, build_forwarder, start_kernel_audit
from cmld.clients.availability import await_services
from cmld.clients.scd_events import ScdEventListener
from cmld.control.dispatcher import Dispatcher
from cmld.control.server import ControlServer, ServerLimits
from cmld.crypt import dm
from cmld.daemon import Cmld
from cmld.device import ab_slot, ab_update, cservice_binary, shared_store
from cmld.device.config import load_device_uuid
from cmld.device.efivars import EfiError, EfiVars
from cmld.device.power import HOST_POWEROFF, HOST_REBOOT, systemd_is_init
from cmld.modules import settings
from cmld.runtime.registry import Runtime

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = common_parser("cmld", "Container management daemon (GyroidOS compatible).", paths.CONTROL_SOCKET)
    ap.add_argument("--device-conf", type=Path, help="device.conf to use (default BASE/device.conf, or with an A/B "
                    "update set up BASE/device.conf.A or .B, the slot EFI BootCurrent names)")
    ap.add_argument("--efivars-dir", type=Path, default=ab_slot.EFIVARS, metavar="DIR",
                    help="where efivarfs is mounted (default %(default)s): BootCurrent picks device.conf.A or .B")
    ab = ap.add_argument_group("A/B boot-slot update (the original's A_B_UPDATE=y build; device mode only)")
    ab.add_argument("--a-b-update", action="store_true",
                    help="keep two kernel slots on the ESP with EFI boot entries GyroidosA/B; kernel updates go to "
                    "the slot not running and are booted once (BootNext); set up at the first start, with a reboot")
    ab.add_argument("--esp", type=Path, default=ab_update.ESP, metavar="DIR",
                    help="where the ESP is mounted (default %(default)s; kernels in EFI/BOOT/)")
    ab.add_argument("--esp-device", type=Path, default=ab_update.ESP_DEVICE, metavar="DEV",
                    help="the ESP's partition, for the boot entries' device path (default %(default)s)")
    ap.add_argument("--socket-group", help="group allowed to use the control socket (mode 0660)")
    ap.add_argument("--scd-socket", type=Path, default=paths.SCD_SOCKET, help="default %(default)s")
    ap.add_argument("--tpm2d-socket", type=Path, default=paths.TPM2D_SOCKET, help="default %(default)s")
    ap.add_argument("--hosted", action="store_true", default=None,
                    help="hosted mode (development host, no c0) regardless of device.conf")
    ap.add_argument("--idle-timeout", type=float, default=600.0,
                    help="disconnect a control client silent this many seconds (default %(default)s)")
    ap.add_argument("--frame-timeout", type=float, default=10.0,
                    help="disconnect a client that leaves a message unfinished this long (default %(default)s)")
    ap.add_argument("--max-clients", type=int, default=256, help="default %(default)s")
    au = ap.add_argument_group("audit (on with device.conf audit_size > 0)")
    au.add_argument("--audit-dir", type=Path, help="queues, journal and head file (default BASE/audit)")
    au.add_argument("--audit-capacity", type=int, metavar="BYTES",
                    help="queue capacity in bytes instead of audit_size MB (tests)")
    rt = ap.add_argument_group("container runtime")
    rt.add_argument("--run-dir", type=Path, default=Path("/run/cml"),
                    help="runtime state: container mount points, crash-recovery records (default %(default)s)")
    rt.add_argument("--netns-dir", type=Path, default=Path("/run/netns"), help="default %(default)s")
    rt.add_argument("--netns", type=Path, metavar="PATH",
                    help="enter this network namespace (a bound netns file, e.g. /run/netns/x) at start and "
                         "manage it as cmld's own: hosted-mode routing, the CML uplink, physical NICs, "
                         "bridges and cmld's nftables tables live there (default: the one cmld starts in)")
    rt.add_argument("--nic-kinds", default="", metavar="KIND,...",
                    help="link kinds that count as physical NICs besides real hardware, e.g. veth "
                         "(tests and virtual machines)")
    rt.add_argument("--boot-timeout", type=float, default=settings.BOOT_TIMEOUT,
                    help="seconds a container may stay BOOTING (default %(default)s)")
    rt.add_argument("--stop-timeout", type=float, default=settings.STOP_TIMEOUT,
                    help="seconds from stop to SIGKILL (default %(default)s)")
    rt.add_argument("--freeze-timeout", type=float, default=settings.FREEZE_TIMEOUT, help="default %(default)s")
    rt.add_argument("--pids-max", type=int, default=settings.DEFAULT_PIDS_MAX,
                    help="process limit of every container (default %(default)s)")
    rt.add_argument("--c0-down", choices=("poweroff", "exit"), default="poweroff",
                    help="once c0 is down on a device (not hosted) and the others are stopped: power off "
                         "through systemd (cmld exits where systemd is not init), or just exit "
                         "(default %(default)s)")
    rt.add_argument("--wait-services", action="store_true",
                    help="start no container before scd (and tpm2d with tpm_enabled) answer and the device UUID "
                         "is known, as the original's unit stage (the systemd unit sets it)")
    rt.add_argument("--sysfs", type=Path, default=Path("/sys"), help="where USB devices are looked up (tests)")
    rt.add_argument("--uevent-netns", metavar="PATH",
                    help="listen for uevents in this network namespace, from any sender there (tests); "
                         "default: cmld's own, kernel messages only")
    rt.add_argument("--no-autostart", action="store_true", help="do not start c0 and allow_autostart containers")
    rt.add_argument("--require-encryption", action="store_true",
                    help="refuse to start a container whose writable volumes cannot be encrypted (no "
                         "device-mapper, or no token); by default they are plain, with a log line why")
    rt.add_argument("--cservice", type=Path, metavar="PATH",
                    help="the in-container service binary placed at /sbin/cservice in every container (default: "
                         "the first of " + ", ".join(str(p) for p in cservice_binary.search_path()) + ")")
    return ap.parse_args(argv)


def start_audit(state: Cmld, args: argparse.Namespace) -> Auditor | None:
    def running(uuid: str) -> bool:
        c = state.containers.get(uuid)
        return c is not None and c.state == ContainerState.RUNNING

    auditor = build_auditor(state.device, args.audit_dir or state.layout.base / "audit", signer=state.scd.sign_device,
                            known=lambda uuid: state.containers.get(uuid) is not None, running=running,
                            capacity_override=args.audit_capacity, trusted_cert=state.layout.tokens / "device.cert")
    events.install(auditor)
    if auditor is None:
        log.info("auditing is off (device.conf audit_size: 0)")
        return None
    auditor.start()
    try:
        forwarder = build_forwarder(state.device, auditor, state.device_uuid or socket.gethostname())
    except ValueError as e:
        log.error("audit forwarding off: %s", e)
        events.emit("FSA", "GENERIC", "audit-forwarding-misconfigured", None, error=str(e))
        forwarder = None
    if forwarder is not None:
        forwarder.start()
        auditor.closers.append(forwarder.close)
    log.info("auditing to %s: %d bytes per queue, journal at seq %d", auditor.dir, auditor.policy.capacity,
             auditor.journal.last_seq)
    events.emit("SSA", "GENERIC", "cmld-start", None, pid=str(os.getpid()))
    start_kernel_audit(state.device, auditor)
    return auditor


def enter_netns(path: Path) -> None:
    """Before any thread exists: every thread, the launcher and containers sharing cmld's
    namespace (`netns: false`) inherit it."""
    from cmld import linux

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        linux.setns(fd, linux.CLONE_NEWNET)
    finally:
        os.close(fd)


async def set_up_boot_slots(state: Cmld, args: argparse.Namespace) -> tuple[ab_update.ABUpdate | None, bool]:
    """The A/B update (with --a-b-update, on a device): its set-up moved on by one stage; and
    whether the device reboots now (then no container is started)."""
    if not args.a_b_update:
        return None, False
    efi = EfiVars(args.efivars_dir)
    if not efi.available():
        log.error("A/B update: no EFI variables at %s (not booted through UEFI?); kernel updates cannot use "
                  "boot slots", args.efivars_dir)
        return None, False
    slots = ab_update.ABUpdate(efi, state.layout.device_conf, args.esp, args.esp_device)
    if state.hosted:  # as the original: no set-up (no reboots) in hosted mode; one made before is used
        log.info("A/B update in hosted mode: set-up stage %s, not moved on", slots.stage().name)
        await asyncio.to_thread(slots.report_update_boot)
        return slots, False
    try:
        reboot = await asyncio.to_thread(slots.init)
    except (EfiError, OSError) as e:
        log.error("A/B update: the set-up failed: %s; it is tried again at the next start", e)
        return slots, False
    if not reboot:
        return slots, False
    if not systemd_is_init():
        log.error("A/B update: a reboot is due, but systemd is not init; reboot the device yourself")
        return slots, False
    await asyncio.create_subprocess_exec(*HOST_REBOOT)
    return slots, True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.netns is not None:
        try:
            enter_netns(args.netns)
        except OSError as e:
            print(f"cmld: cannot enter the network namespace {args.netns}: {e}", file=sys.stderr)
            return 2

    async def start(stop: asyncio.Event) -> Callable[[], Awaitable[None]]:
        state = Cmld(
            paths.Layout(args.base_dir), log_dir=args.log_dir, device_conf=args.device_conf,
            hosted_override=args.hosted, scd_socket=args.scd_socket, tpm2d_socket=args.tpm2d_socket,
            efivars=args.efivars_dir,
        )
        state.load()
        if args.wait_services:
            state.device_uuid = await await_services(
                args.scd_socket, args.tpm2d_socket if state.device.tpm_enabled else None,
                lambda: load_device_uuid(state.layout.tokens / "device_id.conf"))
        state.crypt_unavailable = await asyncio.to_thread(dm.available)
        if state.crypt_unavailable:
            log.warning("container volumes: no dm-integrity/dm-crypt/dm-verity here (%s): writable volumes are "
                        "plain, GuestOS images hashed in full%s", state.crypt_unavailable,
                        "; containers with writable volumes are refused (--require-encryption)"
                        if args.require_encryption else "")
        layout = state.layout
        slots, rebooting = await set_up_boot_slots(state, args)
        state.installer.kernel_slots = slots
        auditor = start_audit(state, args)
        await state.verify_guestos()
        await asyncio.to_thread(state.purge_obsolete_guestos)
        cservice, cservice_note = cservice_binary.find(args.cservice)
        if cservice is not None:
            log.info("in-container service: %s", cservice_binary.describe(cservice))
        else:
            log.error("%s: containers whose init is /sbin/cservice (every GyroidOS GuestOS) or whose init "
                      "is missing will not start", cservice_note)
        runtime = Runtime(settings.RuntimeSettings(
            base_dir=layout.base, run_dir=args.run_dir, containers_dir=layout.containers,
            guestos_dir=layout.guestos, shared_files_dir=layout.base / "files_shared", netns_dir=args.netns_dir,
            hosted=state.hosted, signed_configs=state.signed_configs, boot_timeout=args.boot_timeout,
            stop_timeout=args.stop_timeout,
            freeze_timeout=args.freeze_timeout, pids_max=args.pids_max, host_dns=state.device.host_dns,
            cservice=cservice, cservice_note=cservice_note,
            tpm2d_socket=args.tpm2d_socket if state.device.tpm_enabled else None,
            crypt_unavailable=state.crypt_unavailable, require_encryption=args.require_encryption,
            sysfs=args.sysfs, uevent_netns=args.uevent_netns,
            nic_kinds=frozenset(k for k in args.nic_kinds.split(",") if k),
        ), state.guestos)
        runtime.setup()
        await asyncio.to_thread(runtime.recover)
        await runtime.net.setup()
        state.runtime = runtime
        runtime.audit = auditor
        gid = grp.getgrnam(args.socket_group).gr_gid if args.socket_group else None
        dispatcher = Dispatcher(state, auditor)
        server = ControlServer(dispatcher, on_close=dispatcher.connection_closed,
                               limits=ServerLimits(args.idle_timeout, args.frame_timeout, args.max_clients))
        await server.listen(args.socket, mode=0o660 if gid is not None else 0o600, gid=gid)

        async def serve_container_control(sock: socket.socket, init_pid: int, privileged: bool) -> ControlServer:
            """c0's socket (privileged) or a feature_install_guest container's (unprivileged)."""
            inside = ControlServer(dispatcher, on_close=dispatcher.connection_closed, limits=server.limits,
                                   privileged=privileged, caller_root=Path(f"/proc/{init_pid}/root"))
            await inside.serve_socket(sock)
            return inside

        async def c0_down() -> None:
            """The device goes down: every container is stopped (c0 last, or c0 went down)."""
            what, command = ("reboot", HOST_REBOOT) if runtime.device_reboot else ("power off", HOST_POWEROFF)
            if args.c0_down == "poweroff" and systemd_is_init():
                log.warning("all containers are down: the device goes down (%s)", what)
                await asyncio.create_subprocess_exec(*command)
            else:
                log.warning("all containers are down: cmld exits instead of a %s (%s)", what,
                            "--c0-down exit" if args.c0_down == "exit"
                            else "systemd is not init, nothing to go down through")
                stop.set()

        async def token_removed(token_uuid: str) -> None:
            """scd's TOKEN_SE_REMOVED: the container of that token is stopped (the original's token_detach)."""
            c = state.containers.get(token_uuid)
            if c is None or not c.is_active:
                log.info("token %s removed: no running container of it", token_uuid)
                return
            await runtime.compartment(c).stop()

        scd_events = ScdEventListener(state.scd, token_removed)
        scd_events.start()
        runtime.hotplug.stop_container = token_removed  # a pulled USB token stops its container too
        runtime.hotplug.start()
        runtime.serve_control = serve_container_control
        runtime.on_c0_down = c0_down
        if slots is not None:
            runtime.on_c0_up = slots.confirm_boot

        async def boot() -> None:
            """Missing GuestOS images first (c0's among them), then c0 and the autostart containers;
            the control socket serves meanwhile."""
            await state.fetch_missing_guestos_images()
            if not args.no_autostart and not rebooting:
                await runtime.autostart(state.containers.all())

        autostart = asyncio.ensure_future(boot())

        async def close() -> None:
            if autostart is not None:
                autostart.cancel()
            await scd_events.close()
            runtime.hotplug.close()
            await server.close()
            await runtime.shutdown()
            await runtime.net.shutdown()
            if auditor is not None:
                events.emit("SSA", "GENERIC", "cmld-stop")
                await auditor.close()
                events.install(None)
            shared_store.unmount_all()
        return close

    return daemon_runner.run(args, "cmld", "cml-daemon", start)


if __name__ == "__main__":
    sys.exit(main())
