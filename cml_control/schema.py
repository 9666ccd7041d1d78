"""The tables of the CLI's wire codec (`wire.py`): field kinds, message layouts and enum names,
mirroring proto/control.proto and proto/container.proto (tests/unit/test_cli_wire.py compares
every entry with the generated descriptors)."""

from __future__ import annotations

ENUM, BOOL, UINT64, STRING, BYTES, MESSAGE = range(6)
_VARINT_KINDS = (ENUM, BOOL, UINT64)
_UINT64_MAX = (1 << 64) - 1


class Unsupported(Exception):
    """The fast codec cannot decode this body exactly; use the protobuf runtime."""


class Field:
    __slots__ = ("default", "enum", "kind", "message", "name", "number", "repeated", "required")

    def __init__(self, number: int, name: str, kind: int, *, repeated: bool = False, required: bool = False,
                 enum: dict[int, str] | None = None, message: Schema | None = None,
                 default: object = None) -> None:
        self.number = number
        self.name = name
        self.kind = kind
        self.repeated = repeated
        self.required = required
        self.enum = enum
        self.message = message
        self.default = default


class Schema:
    """A message type: its fields by number (printing order) and by name."""

    __slots__ = ("by_name", "by_number", "full_name", "ordered", "required")

    def __init__(self, full_name: str, fields: list[Field]) -> None:
        self.full_name = full_name
        self.ordered = sorted(fields, key=lambda f: f.number)
        self.by_number = {f.number: f for f in fields}
        self.by_name = {f.name: f for f in fields}
        self.required = [f.name for f in fields if f.required]


class Msg:
    """A decoded message: field name -> value (a list for repeated fields); only set fields.
    Enums are ints, strings str, bytes bytes, sub-messages Msg. `schema` is None when the
    message came from the protobuf runtime (then it is not printed from here)."""

    __slots__ = ("schema", "values")

    def __init__(self, schema: Schema | None, values: dict[str, object] | None = None) -> None:
        self.schema = schema
        self.values: dict[str, object] = {} if values is None else values

    def has(self, name: str) -> bool:
        return name in self.values

    def get_int(self, name: str, default: int = 0) -> int:
        v = self.values.get(name, default)
        return v if isinstance(v, int) else default

    def get_str(self, name: str, default: str = "") -> str:
        v = self.values.get(name, default)
        return v if isinstance(v, str) else default

    def get_bytes(self, name: str) -> bytes:
        v = self.values.get(name, b"")
        return v if isinstance(v, bytes) else b""

    def get_msg(self, name: str) -> Msg | None:
        v = self.values.get(name)
        return v if isinstance(v, Msg) else None

    def get_list(self, name: str) -> list[object]:
        v = self.values.get(name)
        return v if isinstance(v, list) else []

    def get_msgs(self, name: str) -> list[Msg]:
        return [m for m in self.get_list(name) if isinstance(m, Msg)]


# ------------------------------------------------------------------------------- enum tables

COMMAND = {
    1: "LIST_GUESTOS_CONFIGS", 2: "LIST_CONTAINERS", 3: "GET_CONTAINER_STATUS", 4: "GET_CONTAINER_CONFIG",
    5: "GET_LAST_LOG", 6: "GET_DEVICE_STATS", 20: "PUSH_GUESTOS_CONFIG", 21: "RELOAD_CONTAINERS",
    22: "CREATE_CONTAINER", 23: "REMOVE_CONTAINER", 24: "REGISTER_LOCALCA", 25: "REGISTER_NEWCA",
    26: "REMOVE_GUESTOS", 30: "WIPE_DEVICE", 31: "REBOOT_DEVICE", 32: "SET_PROVISIONED", 33: "GET_PROVISIONED",
    34: "DESTROY_SYSTEM", 40: "PULL_DEVICE_CSR", 41: "PUSH_DEVICE_CERT", 42: "CHANGE_DEVICE_PIN",
    101: "CONTAINER_START", 102: "CONTAINER_STOP", 103: "CONTAINER_SWITCH", 104: "CONTAINER_FREEZE",
    105: "CONTAINER_UNFREEZE", 106: "CONTAINER_WIPE", 107: "CONTAINER_SNAPSHOT", 108: "CONTAINER_ALLOWAUDIO",
    109: "CONTAINER_DENYAUDIO", 110: "CONTAINER_ASSIGNIFACE", 111: "CONTAINER_UNASSIGNIFACE",
    112: "CONTAINER_LIST_IFACES", 113: "CONTAINER_EXEC_CMD", 114: "CONTAINER_EXEC_INPUT",
    115: "CONTAINER_UPDATE_CONFIG", 116: "CONTAINER_CHANGE_TOKEN_PIN", 117: "CONTAINER_CMLD_HANDLES_PIN",
    118: "CONTAINER_DEV_ACCESS", 1000: "AUDIT_READ",
}
CODE = {
    1: "GUESTOS_CONFIGS_LIST", 2: "CONTAINERS_LIST", 3: "CONTAINER_STATUS", 4: "CONTAINER_CONFIG",
    5: "CONTAINER_IFACES", 7: "CONTAINER_CMLD_HANDLES_PIN", 11: "LOG_MESSAGE_FRAGMENT", 12: "LOG_MESSAGE_FINAL",
    13: "RESPONSE", 14: "EXEC_END", 15: "EXEC_OUTPUT", 30: "DEVICE_STATS", 40: "DEVICE_CSR",
    41: "DEVICE_PROVISIONED_STATE", 200: "LOGON_DEVICE", 1000: "AUDIT_ENTRIES",
}
RESPONSE = {
    1: "CONTAINER_START_OK", 2: "CONTAINER_START_LOCK_FAILED", 3: "CONTAINER_START_UNLOCK_FAILED",
    4: "CONTAINER_START_PASSWD_WRONG", 5: "CONTAINER_LOCKED_TILL_REBOOT", 6: "CONTAINER_START_EEXIST",
    7: "CMD_UNSUPPORTED", 8: "CONTAINER_CHANGE_PIN_FAILED", 9: "CONTAINER_CHANGE_PIN_SUCCESSFUL",
    10: "DEVICE_PROVISIONING_ERROR", 11: "DEVICE_CERT_ERROR", 12: "DEVICE_CERT_OK", 13: "CONTAINER_START_EINTERNAL",
    14: "GUESTOS_MGR_INSTALL_STARTED", 15: "GUESTOS_MGR_INSTALL_FAILED", 16: "GUESTOS_MGR_INSTALL_WAITING",
    17: "GUESTOS_MGR_INSTALL_COMPLETED", 18: "CONTAINER_START_TOKEN_UNINIT", 19: "CONTAINER_START_TOKEN_UNPAIRED",
    20: "CONTAINER_USB_PIN_ENTRY_FAIL", 21: "CONTAINER_STOP_OK", 22: "CONTAINER_STOP_LOCK_FAILED",
    23: "CONTAINER_STOP_UNLOCK_FAILED", 24: "CONTAINER_STOP_PASSWD_WRONG", 25: "CONTAINER_STOP_FAILED_NOT_RUNNING",
    26: "CONTAINER_CTRL_EINTERNAL", 27: "GUESTOS_MGR_REGISTER_CA_ERROR", 28: "GUESTOS_MGR_REGISTER_CA_OK",
    29: "CMD_OK", 30: "CMD_FAILED",
}
CONTAINER_TYPE = {1: "CONTAINER", 2: "KVM"}
CONTAINER_STATE = {1: "STOPPED", 2: "STARTING", 3: "BOOTING", 4: "RUNNING", 5: "FREEZING", 6: "FROZEN",
                   7: "ZOMBIE", 8: "SHUTDOWN", 9: "SETUP", 10: "REBOOTING"}
CONTAINER_TRUST = {1: "SIGNED", 2: "LOCALLY_SIGNED", 3: "UNSIGNED"}
CRYPTFS_MODE = {1: "NOT_IMPLEMENTED", 2: "AUTHENC", 3: "ENCRYPT_ONLY", 4: "INTEGRITY_ENCRYPT", 5: "INTEGRITY_ONLY"}


def _numbers(table: dict[int, str]) -> dict[str, int]:
    return {name: number for number, name in table.items()}


C = _numbers(COMMAND)  # C["GET_CONTAINER_STATUS"] == 3
D = _numbers(CODE)
R = _numbers(RESPONSE)
STATE = _numbers(CONTAINER_STATE)

# ------------------------------------------------------------------------------- message tables

CONTAINER_STATUS = Schema("cml.container.ContainerStatus", [
    Field(1, "uuid", STRING, required=True), Field(2, "name", STRING, required=True),
    Field(3, "type", ENUM, required=True, enum=CONTAINER_TYPE),
    Field(4, "state", ENUM, required=True, enum=CONTAINER_STATE),
    Field(5, "uptime", UINT64, required=True), Field(6, "created", UINT64, required=True),
    Field(7, "guestos", STRING, required=True), Field(8, "trust_level", ENUM, required=True, enum=CONTAINER_TRUST),
    Field(9, "cryptfs_mode", ENUM, required=True, enum=CRYPTFS_MODE),
])
LOG_MESSAGE = Schema("cml.control.LogMessage", [Field(1, "name", STRING, required=True),
                                                Field(2, "msg", STRING, required=True)])
DEVICE_STATS = Schema("cml.control.DeviceStats", [
    Field(1, "disk_system", UINT64, required=True), Field(2, "disk_system_free", UINT64, required=True),
    Field(3, "disk_system_used", UINT64, required=True), Field(4, "disk_containers", UINT64),
    Field(5, "disk_containers_free", UINT64), Field(6, "disk_containers_used", UINT64), Field(7, "mem_total", UINT64),
    Field(8, "mem_free", UINT64), Field(9, "mem_available", UINT64),
])
# Every field but 5 (guestos_configs) and 8 (container_configs): those replies go to the runtime.
DAEMON_TO_CONTROLLER = Schema("cml.control.DaemonToController", [
    Field(1, "code", ENUM, required=True, enum=CODE, default=1),
    Field(6, "container_uuids", STRING, repeated=True),
    Field(7, "container_status", MESSAGE, repeated=True, message=CONTAINER_STATUS),
    Field(9, "container_ifaces", STRING, repeated=True),
    Field(11, "container_cmld_handles_pin", BOOL, default=False),
    Field(12, "log_message", MESSAGE, message=LOG_MESSAGE),
    Field(13, "response", ENUM, enum=RESPONSE, default=1),
    Field(20, "device_stats", MESSAGE, message=DEVICE_STATS),
    Field(40, "device_csr", BYTES, default=b""), Field(41, "device_is_provisioned", BOOL, default=False),
    Field(200, "device_uuid", STRING, default=""), Field(201, "logon_hardware_name", STRING, default=""),
    Field(202, "logon_hardware_serial", STRING, default=""), Field(203, "logon_imei", STRING, default=""),
    Field(204, "logon_mac_address", STRING, default=""), Field(205, "logon_phone_number", STRING, default=""),
    Field(206, "exec_end_reason", STRING, default=""), Field(207, "exec_output", BYTES, default=b""),
    Field(300, "error_message", STRING, default=""),
    Field(1000, "audit_entries", STRING, repeated=True), Field(1001, "audit_head_seq", UINT64, default=0),
])
UNSUPPORTED_REPLY_FIELDS = frozenset({5, 8})

CONTAINER_START_PARAMS = Schema("cml.control.ContainerStartParams", [
    Field(1, "key", STRING), Field(2, "no_switch", BOOL), Field(3, "setup", BOOL)])
ASSIGN_INTERFACE_PARAMS = Schema("cml.control.AssignInterfaceParams", [
    Field(1, "iface_name", STRING), Field(2, "persistent", BOOL)])
CONTROLLER_TO_DAEMON = Schema("cml.control.ControllerToDaemon", [
    Field(1, "command", ENUM, required=True, enum=COMMAND),
    Field(10, "container_uuids", STRING, repeated=True),
    Field(11, "container_start_params", MESSAGE, message=CONTAINER_START_PARAMS),
    Field(12, "assign_iface_params", MESSAGE, message=ASSIGN_INTERFACE_PARAMS),
    Field(13, "container_config_file", BYTES), Field(14, "exec_command", STRING),
    Field(15, "exec_args", STRING, repeated=True), Field(16, "exec_pty", BOOL), Field(17, "exec_input", STRING),
    Field(18, "container_config_signature", BYTES), Field(19, "container_config_certificate", BYTES),
    Field(20, "guestos_config_file", BYTES), Field(21, "guestos_config_signature", BYTES),
    Field(22, "guestos_config_certificate", BYTES), Field(23, "guestos_rootcert", BYTES),
    Field(24, "guestos_name", STRING), Field(41, "device_cert", BYTES), Field(42, "device_pin", STRING),
    Field(43, "device_newpin", STRING), Field(44, "dev_rule", STRING), Field(45, "remove_logs", BOOL),
    Field(46, "system_services", BOOL),
    Field(1000, "audit_after_seq", UINT64), Field(1001, "audit_wait", UINT64), Field(1002, "audit_limit", UINT64),
])
