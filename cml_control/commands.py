"""The command layer shared by `control` and `cml-control`: what each subcommand sends to cmld,
in which order, and how it reads the replies, following the original client step by step.

It never prints and never exits: output goes through a Console, a path where the original calls
FATAL raises Fatal, and the result says what happened so each program can choose its exit
status (the original: 0 after any reply; cml-control: 0/1/3, see failures.py).
"""

from __future__ import annotations

import os

from . import wire
from .console import Console
from .failures import (
    ERROR,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_WAIT_OTHER,
    EXIT_WAIT_TIMEOUT,
    INFO,
    WARN,
    Fatal,
)
from .grammar import PHASE_COMMAND, Invocation, UsageError
from .identify import original_uuid
from .inputs import read_input
from .reply import Reply
from .result import Result, reply_ok
from .session import Session

D, R, S = wire.D, wire.R, wire.STATE
NOT_FOUND = "Container with provided uuid/name does not exist!"
TOKEN_NONE = 1  # ContainerTokenType.NONE; a config without token_type means SOFT
SIMPLE_GLOBAL = {"list_guestos": "LIST_GUESTOS_CONFIGS", "reload": "RELOAD_CONTAINERS", "wipe_device": "WIPE_DEVICE",
                 "destroy_system": "DESTROY_SYSTEM", "reboot": "REBOOT_DEVICE", "set_provisioned": "SET_PROVISIONED",
                 "get_provisioned": "GET_PROVISIONED", "device_stats": "GET_DEVICE_STATS"}
SIMPLE_CONTAINER = {"remove": "REMOVE_CONTAINER", "config": "GET_CONTAINER_CONFIG", "freeze": "CONTAINER_FREEZE",
                    "unfreeze": "CONTAINER_UNFREEZE", "wipe": "CONTAINER_WIPE", "snapshot": "CONTAINER_SNAPSHOT",
                    "allow_audio": "CONTAINER_ALLOWAUDIO", "deny_audio": "CONTAINER_DENYAUDIO",
                    "ifaces": "CONTAINER_LIST_IFACES"}


class Runner:
    def __init__(self, inv: Invocation, console: Console) -> None:
        self.inv = inv
        self.console = console
        self._session: Session | None = None

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session(self.inv.socket, self.inv.timeout)
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

    def info(self, text: str) -> None:
        """An INFO line of the original that cml-control leaves out."""
        self.console.log(INFO, text, None)

    # ------------------------------------------------------------------------ dispatch

    def execute(self) -> Result:
        cmd = self.inv.command
        if cmd in SIMPLE_GLOBAL:
            self.session.send(SIMPLE_GLOBAL[cmd])
            return self.finish()
        if cmd in SIMPLE_CONTAINER:
            uuid = self.resolve(self.container)
            self.session.send(SIMPLE_CONTAINER[cmd], container_uuids=[uuid])
            return self.finish()
        method = getattr(self, "cmd_" + cmd)
        result: Result = method()
        return result

    @property
    def container(self) -> str:
        assert self.inv.container is not None  # the grammar requires it for container commands
        return self.inv.container

    # ------------------------------------------------------------------------ replies

    def finish(self, *, csr_path: str | None = None, log_dir: str | None = None) -> Result:
        """The original's handle_resp loop: read replies until one ends the command."""
        written_all = True
        while True:
            reply = self.session.receive()
            code = reply.code
            if code == D["DEVICE_CSR"] and csr_path is not None:
                return self._csr(reply, csr_path)
            if code == D["RESPONSE"]:
                if not reply.has_response():
                    return Result(False, reply)  # the original prints nothing for it
                if reply.response == R["GUESTOS_MGR_INSTALL_STARTED"]:
                    text = "Waiting for images to be transfered ..."
                    self.console.log(INFO, text, text)
                    continue
            elif code in (D["LOG_MESSAGE_FRAGMENT"], D["LOG_MESSAGE_FINAL"]):
                if log_dir is None:
                    self.console.log(WARN, "log_dir is null. Did not except to receive a LOG_MESSAGE",
                                     "ignored a log message cmld sent unasked")
                    continue
                written_all = self._log_fragment(reply, log_dir) and written_all
                continue
            self.console.dump(reply)
            return Result(reply_ok(reply) and written_all, reply)

    def _csr(self, reply: Reply, path: str) -> Result:
        if not reply.msg.has("device_csr"):
            why = reply.msg.get_str("error_message") or "Device not in Provisioning mode!"
            self.console.log(ERROR, "DEVICE_CSR_ERROR: Device not in Provisioning mode!", f"DEVICE_CSR_ERROR: {why}")
            return Result(False, reply)
        try:
            with open(path, "wb") as f:
                f.write(reply.msg.get_bytes("device_csr"))
        except OSError as e:
            self.console.log(ERROR, f"writing device csr to {path}", f"cannot write {path}: {e.strerror or e}")
            return Result(False, reply)
        text = f"device csr written to {path}"
        self.console.log(INFO, text, text)
        return Result(True, reply)

    def _log_fragment(self, reply: Reply, log_dir: str) -> bool:
        final = reply.code == D["LOG_MESSAGE_FINAL"]
        lm = reply.msg.get_msg("log_message")
        if lm is None:
            self.console.log(ERROR, "resp->log_message is null.", "cmld sent a log message without a body")
            return False
        name = lm.get_str("name")
        self.info(f"Received {'final ' if final else ''}fragment of logfile {name}")
        # The name comes from the daemon: it must not point outside the directory.
        if not name or name != os.path.basename(name) or name in (".", ".."):
            raise Fatal(f"cmld sent an unsafe log file name {name!r}", code=EXIT_UNREACHABLE)
        try:
            with open(os.path.join(log_dir, name), "a", encoding="utf-8") as f:
                f.write(lm.get_str("msg"))
        except OSError as e:
            self.console.log(INFO, f"logfile {name} could not be written.",
                             f"cannot write {os.path.join(log_dir, name)}: {e.strerror or e}")
            return False
        if final:
            self.console.log(INFO, None, f"retrieved {name}")
        return True

    # ------------------------------------------------------------------------ containers

    def resolve(self, ident: str, *, system: bool = False) -> str:
        """The original's get_container_uuid_new: all statuses, then the UUID, or else the name."""
        reply = self.session.request("GET_CONTAINER_STATUS", system_services=True if system else None)
        statuses = reply.statuses()
        uuid, warning = original_uuid(ident)
        if warning:
            self.console.log(WARN, warning, None)
        if uuid is not None:
            for st in statuses:
                if st.get_str("uuid") == uuid:
                    return uuid
        else:
            self.info("Retrying with name")
            for st in statuses:
                if st.get_str("name") == ident:
                    return st.get_str("uuid")
        detail = NOT_FOUND
        if reply.code != D["CONTAINER_STATUS"]:
            answer = reply.response_name if reply.has_response() else reply.code_name
            detail = f"cannot list containers: cmld answered {answer}"
        raise Fatal(NOT_FOUND, detail=detail)

    def cmd_state(self) -> Result:
        uuid = self.resolve(self.container, system=True)
        self.session.send("GET_CONTAINER_STATUS", container_uuids=[uuid])
        return self.finish()

    def _cmld_handles_pin(self, uuid: str) -> bool:
        reply = self.session.request("CONTAINER_CMLD_HANDLES_PIN", container_uuids=[uuid])
        if (reply.code != D["CONTAINER_CMLD_HANDLES_PIN"]
                or (reply.has_response() and reply.response == R["CMD_UNSUPPORTED"])
                or not reply.msg.has("container_cmld_handles_pin")):
            self.console.say("ERROR: Failed to retrieve pin handle info. Assuming control handles pin entry",
                             "cannot tell whether cmld reads the PIN on a PIN pad; asking here")
            return False
        return reply.msg.get_int("container_cmld_handles_pin") != 0

    def _has_token(self, uuid: str) -> bool:
        """Whether a PIN is worth asking for (ours: the original asks even without a token)."""
        body = self.session.request_body("GET_CONTAINER_CONFIG", container_uuids=[uuid])
        config = wire.find_bytes(body, 8)
        if config is None:
            return True
        return wire.find_varint(config, [30]) != TOKEN_NONE

    def _start_params(self, uuid: str) -> dict[str, object]:
        inv = self.inv
        params: dict[str, object] = {}
        if inv.setup:
            params["setup"] = True
        if inv.key is not None:
            params["key"] = inv.key
        if self._cmld_handles_pin(uuid):
            if inv.key_given:
                self.console.say("WARN: argument --key will be ignored for containers configured with USB pin reader",
                                 "WARN: --key is ignored: the PIN is entered on the PIN reader")
            self.console.say("Please Enter your password via pin reader", "Please Enter your password via pin reader")
        elif not inv.key_given and self._has_token(uuid):
            params["key"] = self.console.ask("Password: ")
        return params

    def cmd_start(self) -> Result:
        return self._start_or_stop("CONTAINER_START", want=S["SETUP"] if self.inv.setup else S["RUNNING"])

    def cmd_stop(self) -> Result:
        return self._start_or_stop("CONTAINER_STOP", want=S["STOPPED"])

    def _start_or_stop(self, command: str, want: int) -> Result:
        uuid = self.resolve(self.container)
        params = self._start_params(uuid)
        self.session.send(command, container_uuids=[uuid], container_start_params=params)
        result = self.finish()
        if self.inv.wait:
            if not result.ok:
                result.status = EXIT_FAILED
            else:
                result.status = self._wait(uuid, want)
                result.ok = result.status == EXIT_OK
        return result

    def _wait(self, uuid: str, want: int) -> int:
        from .waiting import wait_for_state

        outcome, state = wait_for_state(self.session, uuid, want, self.inv.wait_timeout)
        wanted = wire.CONTAINER_STATE[want]
        now = wire.CONTAINER_STATE.get(state, "gone") if state is not None else "gone"
        if outcome == "reached":
            return EXIT_OK
        if outcome == "timeout":
            text = f"{self.container} is still {now} after {self.inv.wait_timeout:g} s, not {wanted}"
            self.console.log(ERROR, text, text)
            return EXIT_WAIT_TIMEOUT
        text = f"{self.container} is {now}, not {wanted}"
        self.console.log(ERROR, text, text)
        return EXIT_WAIT_OTHER

    def cmd_change_pin(self) -> Result:
        uuid = self.resolve(self.container)
        current = self.console.ask("Current Password: ")
        new = self.console.ask("New Password: ")
        again = self.console.ask("Re-enter New Password: ")
        if new != again:
            raise Fatal("Passwords don't match!")
        self.session.send("CONTAINER_CHANGE_TOKEN_PIN", container_uuids=[uuid], device_pin=current,
                          device_newpin=new)
        return self.finish()

    def cmd_update_config(self) -> Result:
        uuid = self.resolve(self.container)
        fields = self._config_files("CONTAINER_UPDATE_CONFIG")
        self.session.send("CONTAINER_UPDATE_CONFIG", container_uuids=[uuid], **fields)
        return self._config_reply()

    def cmd_create(self) -> Result:
        fields = self._config_files("CREATE_CONTAINER")
        self.session.send("CREATE_CONTAINER", **fields)
        return self._config_reply()

    def _config_files(self, command: str) -> dict[str, object]:
        """create / update_config: the config, then an optional signature and, only with it, an
        optional certificate (a signature alone is sent alone, as the original does)."""
        args = self.inv.args
        conf, size = read_input(args[0], "config", f"Error accessing container config file {args[0]}.",
                                f"Error reading {args[0]}. Aborting.")
        if command == "CONTAINER_UPDATE_CONFIG":
            self.info(f"Creating container with cfg {args[0]} (len {size}).")
        fields: dict[str, object] = {"container_config_file": conf}
        if len(args) > 1:
            fields["container_config_signature"] = read_input(
                args[1], "signature", f"Error accessing container signature file {args[1]}.",
                f"Error reading {args[1]}. Aborting.")[0]
            if len(args) > 2:
                fields["container_config_certificate"] = read_input(
                    args[2], "certificate", f"Error accessing cotainer certificate file {args[2]}.",
                    f"Error reading {args[2]}. Aborting.")[0]
        if command == "CREATE_CONTAINER":
            self.info(f"Creating container with cfg {args[0]} (len {size}).")
        return fields

    def _config_reply(self) -> Result:
        result = self.finish()
        reply = result.reply
        if reply is not None and (reply.code != D["CONTAINER_CONFIG"] or not reply.msg.has("container_configs")):
            failure = "container not created" if self.inv.command == "create" else "config not updated"
            self.console.log(ERROR, None, f"{failure}; cmld's log says why")
            result.ok = False
        return result

    def cmd_dev_access(self) -> Result:
        uuid = self.resolve(self.container)
        rule = self.inv.args[0]
        self.info(f"Setting device access rule {rule}")
        self.session.send("CONTAINER_DEV_ACCESS", container_uuids=[uuid], dev_rule=rule)
        return self.finish()

    def cmd_assign_iface(self) -> Result:
        uuid = self.resolve(self.container)
        command = "CONTAINER_ASSIGNIFACE" if self.inv.command == "assign_iface" else "CONTAINER_UNASSIGNIFACE"
        params: dict[str, object] = {"iface_name": self.inv.iface}
        if self.inv.persistent:
            params["persistent"] = True
        self.session.send(command, container_uuids=[uuid], assign_iface_params=params)
        return self.finish()

    cmd_unassign_iface = cmd_assign_iface

    def cmd_run(self) -> Result:
        from .exec_session import run

        uuid = self.resolve(self.container)
        self.session.no_timeout()  # a session lasts as long as the command
        return run(self.session, self.console, uuid, self.inv.args, self.inv.pty)

    # ------------------------------------------------------------------------ device

    def cmd_list(self) -> Result:
        self.session.send("GET_CONTAINER_STATUS", system_services=True if self.inv.system else None)
        return self.finish()

    def cmd_push_guestos_config(self) -> Result:
        names = self.inv.args
        what = ("config", "signature", "certificate")
        for name, w in zip(names, what, strict=False):  # the original checks all three first
            try:
                os.stat(name)
            except (OSError, ValueError) as e:
                raise Fatal(f"Error accessing {w} file {name}.",
                            detail=f"cannot read {w} {name}: {getattr(e, 'strerror', None) or e}") from None
        files = [read_input(n, w, f"Error accessing {w} file {n}.", f"Error reading {n}. Aborting.")
                 for n, w in zip(names, what, strict=False)]
        if len(files) == 3:
            self.info(f"Pushing cfg {names[0]} (len {files[0][1]}), sig {names[1]} (len {files[1][1]}), and cert "
                      f"{names[2]} (len {files[2][1]}).")
        fields: dict[str, object] = {"guestos_config_file": files[0][0]}
        if len(files) == 3:
            fields["guestos_config_signature"] = files[1][0]
            fields["guestos_config_certificate"] = files[2][0]
        self.session.send("PUSH_GUESTOS_CONFIG", **fields)
        self.session.no_timeout()  # the images are downloaded first
        return self.finish()

    def cmd_remove_guestos(self) -> Result:
        name = self.inv.args[0]
        self.info(f"Removing Guestos: {name}")
        self.session.send("REMOVE_GUESTOS", guestos_name=name)
        return self.finish()

    def cmd_ca_register(self) -> Result:
        path = self.inv.args[0]
        data, size = read_input(path, "CA certificate", f"Error accessing certificate file {path}.",
                                f"Error reading {path}.")
        self.info(f"Registering new CA by cert {path} (len {size}).")
        self.session.send("REGISTER_NEWCA", guestos_rootcert=data)
        return self.finish()

    def cmd_push_cert(self) -> Result:
        path = self.inv.args[0]
        data, size = read_input(path, "certificate", f"Error accessing certificate file {path}.",
                                f"Error reading {path}.")
        self.info(f"Pushing new device certifcate from file {path} (len {size}).")
        self.session.send("PUSH_DEVICE_CERT", device_cert=data)
        return self.finish()

    def cmd_pull_csr(self) -> Result:
        self.session.send("PULL_DEVICE_CSR")
        return self.finish(csr_path=self.inv.args[0])

    def cmd_retrieve_logs(self) -> Result:
        log_dir = self.inv.args[0] + "/"  # the original always appends one
        self.info(f"Copy logs to {log_dir}")
        if not os.path.isdir(log_dir):
            raise UsageError(f"{self.inv.args[0]} is not an existing directory", PHASE_COMMAND,
                             info="Directory does not exist. Please specify existing directory or no directory "
                                  "to copy into ./")
        self.session.send("GET_LAST_LOG", remove_logs=True if self.inv.remove_logs else None)
        self.session.no_timeout()
        return self.finish(log_dir=log_dir)
