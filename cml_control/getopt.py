"""GNU `getopt_long` as glibc implements it, so `control` and `cml-control` read options exactly
like the original C client, which parses each subcommand with its own getopt_long table.

What is reproduced: argument permutation (operands are collected, options anywhere), `+` at the
start of the short-option string (stop at the first operand), `--` ending the options, `-` as an
operand, clustered short options (`-sk1`), attached and separate required arguments (`-sX`,
`-s X`, `--socket=X`, `--socket X`), optional arguments (`-kX`, `--key=X`), unambiguous prefixes
of long options (`--ke=X`), and glibc's diagnostics word for word.

One deliberate difference, switched on by the caller with `optional_takes_next`: an option with an
*optional* argument given without one (`--key PIN`, `-k PIN`, `-i eth0`) takes the next word as its
value when that word does not start with `-`. glibc leaves the value unset there and the word
becomes an operand, so the PIN or interface name was silently lost.

Pure logic: no I/O, nothing imported, so the CLI pays nothing for it at start-up.
"""

from __future__ import annotations

NO_ARGUMENT, REQUIRED_ARGUMENT, OPTIONAL_ARGUMENT = 0, 1, 2


class GetoptError(Exception):
    """The diagnostic glibc would print after `<argv[0]>: ` (for example `invalid option -- 'x'`).
    `options` are those parsed before it (the original acts on them one by one)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.options: list[tuple[str, str | None]] = []


class LongOption:
    """One `struct option`: a name, whether it takes an argument, and the key it reports."""

    __slots__ = ("has_arg", "key", "name")

    def __init__(self, name: str, has_arg: int, key: str) -> None:
        self.name = name
        self.has_arg = has_arg
        self.key = key


def parse_shortopts(spec: str) -> tuple[bool, dict[str, int]]:
    """`"+s:h"` -> (stop at first operand, {"s": REQUIRED_ARGUMENT, "h": NO_ARGUMENT})."""
    require_order = spec.startswith("+")
    if require_order:
        spec = spec[1:]
    table: dict[str, int] = {}
    i = 0
    while i < len(spec):
        ch = spec[i]
        if spec.startswith("::", i + 1):
            table[ch] = OPTIONAL_ARGUMENT
            i += 3
        elif spec.startswith(":", i + 1):
            table[ch] = REQUIRED_ARGUMENT
            i += 2
        else:
            table[ch] = NO_ARGUMENT
            i += 1
    return require_order, table


def _match_long(name: str, longopts: list[LongOption], shown: str) -> LongOption:
    """Exact name first; else the single option the name is a prefix of. Several prefix matches
    are ambiguous only when they differ in argument kind or key (glibc's rule)."""
    found: LongOption | None = None
    ambiguous: list[LongOption] = []
    for opt in longopts:
        if not opt.name.startswith(name):
            continue
        if len(opt.name) == len(name):
            return opt
        if found is None:
            found = opt
        elif found.has_arg != opt.has_arg or found.key != opt.key:
            if not ambiguous:
                ambiguous.append(found)
            ambiguous.append(opt)
    if ambiguous:
        listed = "".join(f" '--{o.name}'" for o in longopts if o in ambiguous)
        raise GetoptError(f"option '--{shown}' is ambiguous; possibilities:{listed}")
    if found is None:
        raise GetoptError(f"unrecognized option '--{shown}'")
    return found


def getopt_long(args: list[str], shortopts: str, longopts: list[LongOption], *,
                optional_takes_next: bool = False,
                stop_at: frozenset[str] = frozenset()) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Parse `args` (argv without argv[0]). Returns (options in order as (key, value or None),
    operands in order). Raises GetoptError at the first error, as the original then prints its
    usage and exits. Parsing also ends right after an option whose key is in `stop_at`: the
    original's option loop leaves (prints its usage) there, before it sees later errors."""
    require_order, shorts = parse_shortopts(shortopts)
    options: list[tuple[str, str | None]] = []
    operands: list[str] = []
    try:
        _scan(args, require_order, shorts, longopts, optional_takes_next, stop_at, options, operands)
    except GetoptError as e:
        e.options = options
        raise
    return options, operands


def _scan(args: list[str], require_order: bool, shorts: dict[str, int], longopts: list[LongOption],
          optional_takes_next: bool, stop_at: frozenset[str], options: list[tuple[str, str | None]],
          operands: list[str]) -> None:
    i = 0
    n = len(args)
    while i < n:
        arg = args[i]
        i += 1
        if arg == "--":
            operands.extend(args[i:])
            break
        if not arg.startswith("-") or arg == "-":
            operands.append(arg)
            if require_order:
                operands.extend(args[i:])
                break
            continue
        if arg.startswith("--"):
            body = arg[2:]
            name, eq, value = body.partition("=")
            opt = _match_long(name, longopts, body)
            if opt.has_arg == NO_ARGUMENT:
                if eq:
                    raise GetoptError(f"option '--{opt.name}' doesn't allow an argument")
                options.append((opt.key, None))
            elif opt.has_arg == REQUIRED_ARGUMENT:
                if not eq:
                    if i >= n:
                        raise GetoptError(f"option '--{opt.name}' requires an argument")
                    value = args[i]
                    i += 1
                options.append((opt.key, value))
            else:
                if not eq and optional_takes_next and i < n and not args[i].startswith("-"):
                    value, eq = args[i], "="
                    i += 1
                options.append((opt.key, value if eq else None))
            if opt.key in stop_at:
                return
            continue
        # a cluster of short options
        j = 1
        while j < len(arg):
            ch = arg[j]
            j += 1
            kind = shorts.get(ch)
            if kind is None or ch == ":":
                raise GetoptError(f"invalid option -- '{ch}'")
            if kind == NO_ARGUMENT:
                options.append((ch, None))
                if ch in stop_at:
                    return
                continue
            rest = arg[j:]
            if kind == REQUIRED_ARGUMENT:
                if not rest:
                    if i >= n:
                        raise GetoptError(f"option requires an argument -- '{ch}'")
                    rest = args[i]
                    i += 1
                options.append((ch, rest))
            elif rest:
                options.append((ch, rest))
            elif optional_takes_next and i < n and not args[i].startswith("-"):
                options.append((ch, args[i]))
                i += 1
            else:
                options.append((ch, None))
            if ch in stop_at:
                return
            break
