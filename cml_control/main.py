"""cml-control: the command-line client of cmld, compatible with GyroidOS `control`.

Replies are printed in protobuf text format on stdout exactly as the original prints them (so
scripts that grep `response: CMD_OK` keep working), or as JSON lines with --json. Diagnostics go
to stderr. Exit codes: 0 success, 1 the daemon refused or reported a failure, 2 usage error,
3 cmld unreachable or a protocol error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from cml_common import paths
from cml_common.messages.container_pb2 import ContainerStatus, ContainerTokenType
from cml_common.messages.control_pb2 import ContainerStartParams, ControllerToDaemon, DaemonToController
from cml_common.textconfig import to_text

from . import exec_session
from .client import ControlClient, ControlError
from .prompts import PromptError, ask, ask_new_pin

C = ControllerToDaemon
D = DaemonToController
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
MAX_INPUT_FILE = 64 * 1024 * 1024 - 4096

SUCCESS_RESPONSES = frozenset({
    D.CMD_OK, D.CONTAINER_START_OK, D.CONTAINER_STOP_OK, D.CONTAINER_CHANGE_PIN_SUCCESSFUL,
    D.DEVICE_CERT_OK, D.GUESTOS_MGR_INSTALL_COMPLETED, D.GUESTOS_MGR_REGISTER_CA_OK,
})

SIMPLE_GLOBAL = {
    "list_guestos": C.LIST_GUESTOS_CONFIGS, "reload": C.RELOAD_CONTAINERS,
    "wipe_device": C.WIPE_DEVICE, "destroy_system": C.DESTROY_SYSTEM, "reboot": C.REBOOT_DEVICE,
    "set_provisioned": C.SET_PROVISIONED, "get_provisioned": C.GET_PROVISIONED,
    "device_stats": C.GET_DEVICE_STATS,
}
SIMPLE_CONTAINER = {
    "remove": C.REMOVE_CONTAINER, "config": C.GET_CONTAINER_CONFIG, "freeze": C.CONTAINER_FREEZE,
    "unfreeze": C.CONTAINER_UNFREEZE, "wipe": C.CONTAINER_WIPE, "snapshot": C.CONTAINER_SNAPSHOT,
    "allow_audio": C.CONTAINER_ALLOWAUDIO, "deny_audio": C.CONTAINER_DENYAUDIO,
    "ifaces": C.CONTAINER_LIST_IFACES,
}


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------- output


class Printer:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def show(self, reply: D) -> None:
        if self.as_json:
            from google.protobuf import json_format

            d = json_format.MessageToDict(reply, preserving_proto_field_name=True)
            sys.stdout.write(json.dumps(d, sort_keys=False) + "\n")
        else:
            sys.stdout.write(to_text(reply))
        sys.stdout.flush()


def reply_ok(reply: D) -> bool:
    if reply.code == D.RESPONSE:
        return reply.response in SUCCESS_RESPONSES
    return True


def info(msg: str) -> None:
    sys.stderr.write(f"cml-control: {msg}\n")


def read_input_file(path: str, what: str) -> bytes:
    try:
        size = os.stat(path).st_size
        if size > MAX_INPUT_FILE:
            raise CliError(f"{what} {path} is {size} bytes; too large for one message")
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CliError(f"cannot read {what} {path}: {e.strerror or e}") from e


# ---------------------------------------------------------------------- commands


class Commands:
    def __init__(self, client: ControlClient, printer: Printer) -> None:
        self.client = client
        self.printer = printer

    def finish(self, reply: D) -> int:
        self.printer.show(reply)
        if not reply_ok(reply):
            info(f"cmld answered {D.Response.Name(reply.response)}")
            return EXIT_FAILED
        return EXIT_OK

    def resolve(self, ident: str, *, with_units: bool = False) -> ContainerStatus:
        """UUID or name, as the original: ask for all statuses, match UUID first, then name."""
        reply = self.client.request(C(command=C.GET_CONTAINER_STATUS, system_services=with_units))
        if reply.code != D.CONTAINER_STATUS:
            raise CliError(f"cannot list containers: cmld answered {D.Response.Name(reply.response)}")
        for st in reply.container_status:
            if st.uuid == ident:
                return st
        for st in reply.container_status:
            if st.name == ident:
                return st
        raise CliError("Container with provided uuid/name does not exist!")

    def simple(self, command: int, uuid: str | None = None, **fields: object) -> int:
        msg = C(command=command, **fields)  # type: ignore[arg-type]
        if uuid is not None:
            msg.container_uuids.append(uuid)
        return self.finish(self.client.request(msg))

    def list(self, args: argparse.Namespace) -> int:
        return self.simple(C.GET_CONTAINER_STATUS, system_services=args.system)

    def state(self, args: argparse.Namespace) -> int:
        st = self.resolve(args.container, with_units=True)
        return self.simple(C.GET_CONTAINER_STATUS, st.uuid, system_services=True)

    def create(self, args: argparse.Namespace) -> int:
        msg = C(command=C.CREATE_CONTAINER, container_config_file=read_input_file(args.conf, "config"))
        self._add_signature(msg, args, container=True)
        return self._config_reply(self.client.request(msg), "container not created")

    def update_config(self, args: argparse.Namespace) -> int:
        st = self.resolve(args.container)
        msg = C(command=C.CONTAINER_UPDATE_CONFIG, container_uuids=[st.uuid],
                container_config_file=read_input_file(args.conf, "config"))
        self._add_signature(msg, args, container=True)
        return self._config_reply(self.client.request(msg), "config not updated")

    def _add_signature(self, msg: C, args: argparse.Namespace, *, container: bool) -> None:
        if (args.sig is None) != (args.cert is None):
            raise CliError("give both a signature and a certificate file, or neither", EXIT_USAGE)
        if args.sig is not None:
            sig, cert = read_input_file(args.sig, "signature"), read_input_file(args.cert, "certificate")
            if container:
                msg.container_config_signature, msg.container_config_certificate = sig, cert
            else:
                msg.guestos_config_signature, msg.guestos_config_certificate = sig, cert

    def _config_reply(self, reply: D, failure: str) -> int:
        self.printer.show(reply)
        if reply.code != D.CONTAINER_CONFIG or not reply.container_configs:
            info(f"{failure}; cmld's log says why")
            return EXIT_FAILED
        return EXIT_OK

    def _params(self, uuid: str, key: str | None, setup: bool = False) -> ContainerStartParams | None:
        """Start parameters: the PIN for a container with a token; none for token type NONE."""
        cfg = self.client.request(C(command=C.GET_CONTAINER_CONFIG, container_uuids=[uuid]))
        if cfg.container_configs and cfg.container_configs[0].token_type == ContainerTokenType.NONE:
            return ContainerStartParams(setup=True) if setup else None
        handles = self.client.request(C(command=C.CONTAINER_CMLD_HANDLES_PIN, container_uuids=[uuid]))
        params = ContainerStartParams(setup=setup) if setup else ContainerStartParams()
        if handles.code == D.CONTAINER_CMLD_HANDLES_PIN and handles.container_cmld_handles_pin:
            if key is not None:
                info("WARN: --key is ignored: the PIN is entered on the PIN reader")
            sys.stderr.write("Please Enter your password via pin reader\n")
            return params
        params.key = key if key is not None else ask("Password: ")
        return params

    def start(self, args: argparse.Namespace) -> int:
        st = self.resolve(args.container)
        params = self._params(st.uuid, args.key, args.setup)
        if params is None:
            return self.simple(C.CONTAINER_START, st.uuid)
        return self.simple(C.CONTAINER_START, st.uuid, container_start_params=params)

    def stop(self, args: argparse.Namespace) -> int:
        st = self.resolve(args.container)
        params = self._params(st.uuid, args.key)
        if params is None:
            return self.simple(C.CONTAINER_STOP, st.uuid)
        return self.simple(C.CONTAINER_STOP, st.uuid, container_start_params=params)

    def change_pin(self, args: argparse.Namespace) -> int:
        st = self.resolve(args.container)
        current, new = ask_new_pin()
        return self.simple(C.CONTAINER_CHANGE_TOKEN_PIN, st.uuid, device_pin=current, device_newpin=new)

    def dev_access(self, args: argparse.Namespace) -> int:
        st = self.resolve(args.container)
        return self.simple(C.CONTAINER_DEV_ACCESS, st.uuid, dev_rule=args.rule)

    def iface(self, args: argparse.Namespace) -> int:
        st = self.resolve(args.container)
        command = C.CONTAINER_ASSIGNIFACE if args.cmd == "assign_iface" else C.CONTAINER_UNASSIGNIFACE
        msg = C(command=command, container_uuids=[st.uuid])
        msg.assign_iface_params.iface_name = args.iface
        msg.assign_iface_params.persistent = args.persistent
        return self.finish(self.client.request(msg))

    def run(self, args: argparse.Namespace) -> int:
        st = self.resolve(args.container)
        argv = list(args.argv)
        pty = True
        if argv and argv[0] == "nopty":
            pty, argv = False, argv[1:]
        if not argv:
            raise CliError("run needs a command", EXIT_USAGE)
        return exec_session.run(self.client, st.uuid, argv, pty)

    def push_guestos_config(self, args: argparse.Namespace) -> int:
        msg = C(command=C.PUSH_GUESTOS_CONFIG, guestos_config_file=read_input_file(args.conf, "config"))
        self._add_signature(msg, args, container=False)
        self.client.sock.settimeout(None)  # image downloads may take long
        reply = self.client.request(msg)
        while reply.code == D.RESPONSE and reply.response == D.GUESTOS_MGR_INSTALL_STARTED:
            info("Waiting for images to be transfered ...")
            reply = self.client.receive()
        return self.finish(reply)

    def remove_guestos(self, args: argparse.Namespace) -> int:
        return self.simple(C.REMOVE_GUESTOS, guestos_name=args.name)

    def ca_register(self, args: argparse.Namespace) -> int:
        return self.simple(C.REGISTER_NEWCA, guestos_rootcert=read_input_file(args.ca, "CA certificate"))

    def push_cert(self, args: argparse.Namespace) -> int:
        return self.simple(C.PUSH_DEVICE_CERT, device_cert=read_input_file(args.cert, "certificate"))

    def pull_csr(self, args: argparse.Namespace) -> int:
        reply = self.client.request(C(command=C.PULL_DEVICE_CSR))
        if reply.code == D.DEVICE_CSR and reply.HasField("device_csr"):
            try:
                Path(args.out).write_bytes(reply.device_csr)
            except OSError as e:
                raise CliError(f"cannot write {args.out}: {e.strerror or e}") from e
            info(f"device csr written to {args.out}")
            return EXIT_OK
        if reply.code == D.DEVICE_CSR:
            info(f"DEVICE_CSR_ERROR: {reply.error_message or 'Device not in Provisioning mode!'}")
            return EXIT_FAILED
        return self.finish(reply)

    def retrieve_logs(self, args: argparse.Namespace) -> int:
        outdir = Path(args.dir)
        if not outdir.is_dir():
            raise CliError(f"{outdir} is not an existing directory", EXIT_USAGE)
        self.client.sock.settimeout(None)
        self.client.send(C(command=C.GET_LAST_LOG, remove_logs=args.remove))
        started: set[str] = set()
        while True:
            reply = self.client.receive()
            if reply.code in (D.LOG_MESSAGE_FRAGMENT, D.LOG_MESSAGE_FINAL):
                name = reply.log_message.name
                # The name comes from the daemon: never let it point outside the directory.
                if not name or name != os.path.basename(name) or name in (".", ".."):
                    raise CliError(f"cmld sent an unsafe log file name {name!r}", EXIT_UNREACHABLE)
                mode = "a" if name in started else "w"
                started.add(name)
                with open(outdir / name, mode, encoding="utf-8") as f:
                    f.write(reply.log_message.msg)
                if reply.code == D.LOG_MESSAGE_FINAL:
                    info(f"retrieved {name}")
                continue
            return self.finish(reply)


# ---------------------------------------------------------------------- argument parsing


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cml-control", description="Control cmld (GyroidOS `control` compatible).")
    ap.add_argument("-s", "--socket", type=Path, default=paths.CONTROL_SOCKET,
                    help="control socket (default %(default)s)")
    ap.add_argument("--json", action="store_true", help="print replies as JSON lines")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a reply")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = ap.add_subparsers(dest="cmd", metavar="<command>", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, parents=[common])

    p = add("list", "status of every container")
    p.add_argument("-s", "--system", action="store_true", help="also list system services (scd, tpm2d)")
    for name, help_ in [("list_guestos", "installed GuestOS configs"), ("reload", "reload container configs"),
                        ("wipe_device", "wipe all containers, GuestOSes, keys and tokens"),
                        ("destroy_system", "wipe and clear the TPM"), ("reboot", "stop everything and reboot"),
                        ("set_provisioned", "switch to provisioned mode (persistent)"),
                        ("get_provisioned", "show the provisioned state"), ("device_stats", "disk and memory")]:
        add(name, help_)
    for name in ("create", "update_config"):
        p = add(name, f"{name.replace('_', ' ')} from a config file [signature certificate]")
        if name == "update_config":
            p.add_argument("container")
        p.add_argument("conf")
        p.add_argument("sig", nargs="?")
        p.add_argument("cert", nargs="?")
    for name in ("state", *SIMPLE_CONTAINER):
        add(name, f"{name} <container>").add_argument("container", help="UUID or name")
    p = add("change_pin", "change the container token's PIN (prompts)")
    p.add_argument("container")
    for name in ("start", "stop"):
        p = add(name, f"{name} a container")
        p.add_argument("container")
        p.add_argument("-k", "--key", help="token PIN (prompted for if not given)")
        if name == "start":
            p.add_argument("-s", "--setup", action="store_true", help="start in setup mode")
            p.add_argument("--no-switch", action="store_true", help=argparse.SUPPRESS)
    p = add("dev_access", "allow or deny a device, e.g. 'c 4:1 rwm'")
    p.add_argument("container")
    p.add_argument("rule")
    for name in ("assign_iface", "unassign_iface"):
        p = add(name, f"{name.replace('_', ' ')} a network interface")
        p.add_argument("container")
        p.add_argument("--iface", required=True)
        p.add_argument("--persistent", action="store_true")
    p = add("run", "run a command in a container: run <c> [nopty] <cmd> [args...]")
    p.add_argument("container")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p = add("push_guestos_config", "install or update a signed GuestOS")
    p.add_argument("conf")
    p.add_argument("sig", nargs="?")
    p.add_argument("cert", nargs="?")
    add("remove_guestos", "remove a GuestOS").add_argument("name")
    add("ca_register", "register a CA for GuestOS signatures").add_argument("ca")
    add("pull_csr", "write the device CSR to a file").add_argument("out")
    add("push_cert", "push the signed device certificate").add_argument("cert")
    p = add("retrieve_logs", "copy the daemon logs into an existing directory")
    p.add_argument("dir")
    p.add_argument("-r", "--remove", action="store_true", help="delete old logs after retrieval")
    return ap


def normalise_argv(argv: list[str]) -> list[str]:
    """Commands match case-insensitively, as in the original."""
    out = list(argv)
    i = 0
    while i < len(out):
        a = out[i]
        if a in ("-s", "--socket", "--timeout"):
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        out[i] = a.lower()
        break
    return out


def dispatch(cmds: Commands, args: argparse.Namespace) -> int:
    table: dict[str, Callable[[argparse.Namespace], int]] = {
        "list": cmds.list, "state": cmds.state, "create": cmds.create, "update_config": cmds.update_config,
        "start": cmds.start, "stop": cmds.stop, "change_pin": cmds.change_pin,
        "dev_access": cmds.dev_access, "assign_iface": cmds.iface, "unassign_iface": cmds.iface,
        "run": cmds.run, "push_guestos_config": cmds.push_guestos_config,
        "remove_guestos": cmds.remove_guestos, "ca_register": cmds.ca_register,
        "push_cert": cmds.push_cert, "pull_csr": cmds.pull_csr, "retrieve_logs": cmds.retrieve_logs,
    }
    if args.cmd in SIMPLE_GLOBAL:
        return cmds.simple(SIMPLE_GLOBAL[args.cmd])
    if args.cmd in SIMPLE_CONTAINER:
        st = cmds.resolve(args.container)
        return cmds.simple(SIMPLE_CONTAINER[args.cmd], st.uuid)
    return table[args.cmd](args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(normalise_argv(sys.argv[1:] if argv is None else argv))
    try:
        with ControlClient(args.socket, timeout=args.timeout) as client:
            return dispatch(Commands(client, Printer(args.json)), args)
    except CliError as e:
        info(str(e))
        return e.code
    except PromptError as e:
        info(str(e))
        return EXIT_FAILED
    except ControlError as e:
        info(str(e))
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
