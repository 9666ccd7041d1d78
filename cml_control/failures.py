"""Exit statuses of cml-control and the one exception for the paths where the original aborts."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # cmld refused or failed; an unknown container; a file that cannot be read
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3  # no socket, connection refused or lost, an invalid reply, a timeout
EXIT_WAIT_OTHER = 4  # --wait: the container settled in another state (or vanished)
EXIT_WAIT_TIMEOUT = 5  # --wait: --wait-timeout passed first
EXIT_USAGE_ORIGINAL = 255  # `control`: the original's exit(-1) after its usage text

INFO, WARN, ERROR = "INFO", "WARN", "ERROR"


class Fatal(Exception):
    """A path where the original calls FATAL(): `control` prints `preface` (log lines the original
    prints first), then `original` at FATAL level, then aborts; `cml-control` prints `detail`
    (or `original`) and exits with `code`."""

    def __init__(self, original: str, *, detail: str | None = None, code: int = EXIT_FAILED,
                 preface: list[tuple[str, str]] | None = None) -> None:
        super().__init__(detail or original.strip())
        self.original = original
        self.detail = detail or original.strip()
        self.code = code
        self.preface = preface or []
