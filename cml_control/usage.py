"""Usage texts: `control` prints its usage on stdout as the original does (then exits 255);
`cml-control --help` prints the same command list with our options and exit statuses."""

from __future__ import annotations

COMMANDS: list[tuple[str, str]] = [
    ("list [-s | --system]", "Status of every container; with --system also the units scd and tpm2d."),
    ("list_guestos", "The installed GuestOS configs (newest version of each)."),
    ("reload", "Re-read the container configs from disk."),
    ("wipe_device", "Remove every container, GuestOS, key and token."),
    ("destroy_system", "Wipe the device and clear the TPM."),
    ("reboot", "Stop every container and reboot the device."),
    ("set_provisioned", "Switch the device to provisioned mode (fewer commands allowed)."),
    ("get_provisioned", "Whether the device is provisioned."),
    ("device_stats", "Disk and memory figures."),
    ("create <container.conf> [<container.sig> <container.cert>]",
     "Create a container from a config file, optionally signed."),
    ("remove <container>", "Remove a stopped container with all its data."),
    ("change_pin <container>", "Change the PIN of the container's token (asks for the current and the new PIN)."),
    ("start <container> [--key=<pin>] [--setup] [--wait]",
     "Start a container; asks for the PIN of a container with a token unless --key is given."),
    ("stop <container> [--key=<pin>] [--wait]", "Stop a container."),
    ("config <container>", "The container's config."),
    ("update_config <container> <container.conf> [<container.sig> <container.cert>]",
     "Replace the container's config; a running container uses it from its next start."),
    ("state <container>", "The container's status."),
    ("freeze <container>", "Freeze the container's processes."),
    ("unfreeze <container>", "Thaw a frozen container."),
    ("allow_audio <container>", "Allow audio devices to the container."),
    ("deny_audio <container>", "Withdraw audio devices from the container."),
    ("dev_access <container> <rule>", "Allow or deny a device, e.g. 'c 4:1 rwm'."),
    ("wipe <container>", "Delete the container's data, keep its config."),
    ("snapshot <container>", "Snapshot the container."),
    ("push_guestos_config <guestos.conf> <guestos.sig> <guestos.pem>",
     "Install or update a signed GuestOS (its images are fetched and checked first)."),
    ("remove_guestos <name>", "Remove a GuestOS no container uses."),
    ("ca_register <ca.cert>", "Trust a CA for GuestOS signatures."),
    ("pull_csr <device.csr>", "Write the device's certificate signing request to a file."),
    ("push_cert <device.cert>", "Install the signed device certificate."),
    ("assign_iface <container> --iface <name> [--persistent]",
     "Move a network interface into the container (--persistent: also in its config)."),
    ("unassign_iface <container> --iface <name> [--persistent]", "Give a network interface back."),
    ("ifaces <container>", "The container's network interfaces."),
    ("run <container> [nopty] <command> [<arg>...]", "Run a command inside a running container."),
    ("retrieve_logs <dir> [-r | --remove]",
     "Copy the daemon logs into an existing directory; --remove deletes the old ones afterwards."),
]


def _commands() -> str:
    return "".join(f"   {synopsis}\n        {text}\n\n" for synopsis, text in COMMANDS)


def original_usage(prog: str) -> str:
    """`control`'s usage text: the original's layout (blank line, Usage, the command list)."""
    return f"\nUsage: {prog} [-s <socket file>] <command> [<command args>]\n\ncommands:\n{_commands()}\n"


def help_text(prog: str) -> str:
    return (
        f"Usage: {prog} [-s <socket file>] [--json] [--timeout S] <command> [<command args>]\n\n"
        "Controls cmld over its socket (default /run/socket/cml-control). A <container> is a UUID or a name;\n"
        "commands match case-insensitively. Replies are printed in protobuf text format on stdout\n"
        "(--json: one JSON object per line), diagnostics on stderr.\n\n"
        "options before the command:\n"
        "   -s, --socket <file>   the control socket\n"
        "   --json                print replies as JSON (also after the command)\n"
        "   --timeout S           seconds to wait for each reply (default 60; 0: no limit; also after the command)\n"
        "options of start and stop (additions: the original client has no such options):\n"
        "   --wait                wait until the container is RUNNING (SETUP with --setup) / STOPPED\n"
        "   --wait-timeout S      how long --wait waits (default 60 s; implies --wait)\n\n"
        f"commands:\n{_commands()}"
        "commands of cml-control only (the original client has none of these):\n"
        "   audit [<container>] [--json] [--follow]\n"
        "        cmld's audit records (all, or one container's), oldest first; --follow keeps printing new ones.\n\n"
        "   audit verify [--dir DIR] [--cert PEM] [--anchor FILE]... [--sealed] [--json]\n"
        "        Check an audit journal (default /var/lib/cml/audit) against the trusted device certificate.\n\n"
        "exit status: 0 success, 1 cmld refused or failed, 2 usage error, 3 cmld unreachable or a protocol\n"
        "error, 4 --wait: the container settled in another state, 5 --wait: timed out; run: the command's.\n"
    )
