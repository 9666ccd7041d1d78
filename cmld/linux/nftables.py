"""libnftables (Debian's `libnftables1`, the library behind the `nft` tool), for nftables
transactions in JSON without a process per change.

A context talks to the kernel in the network namespace of the thread that runs the command, so
callers run `run_json` in a thread that entered the namespace they mean (`cmld.net.netns`).
The library is loaded on first use: a cmld whose containers have no network never needs it.
"""

from __future__ import annotations

import ctypes
import json
import threading
from typing import Any

NFT_CTX_OUTPUT_JSON = 1 << 4
_loaded: dict[str, ctypes.CDLL] = {}
_lock = threading.Lock()


class NftError(OSError):
    """nftables refused a command; the message is nft's own."""


def _load() -> ctypes.CDLL:
    with _lock:
        if "lib" not in _loaded:
            try:
                lib = ctypes.CDLL("libnftables.so.1", use_errno=True)
            except OSError as e:
                raise NftError(f"libnftables.so.1 is not installed (Debian package libnftables1): {e}") from None
            lib.nft_ctx_new.restype = ctypes.c_void_p
            lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
            lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
            lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
            lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
            lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            _loaded["lib"] = lib
        return _loaded["lib"]


def run(command: str, *, json_output: bool = False) -> str:
    """One nft command buffer in the calling thread's network namespace; returns nft's output,
    raises NftError with nft's error text. With `json_output` the command may also be JSON
    (libnftables 1.0 reads JSON input only in JSON mode)."""
    lib = _load()
    ctx = lib.nft_ctx_new(0)
    if not ctx:
        raise NftError("nft_ctx_new failed")
    try:
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        if json_output:
            lib.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON)
        rc = lib.nft_run_cmd_from_buffer(ctx, command.encode())
        out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
        err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
    finally:
        lib.nft_ctx_free(ctx)
    if rc != 0:
        raise NftError(f"nftables: {err.strip() or 'command failed'}")
    return out


def run_json(commands: list[dict[str, Any]]) -> None:
    """One atomic nftables transaction given as the JSON API's command list."""
    run(json.dumps({"nftables": commands}), json_output=True)


def ruleset_json() -> list[dict[str, Any]]:
    """The ruleset of the calling thread's namespace, as the JSON API lists it."""
    out = run("list ruleset", json_output=True)
    items = json.loads(out).get("nftables", []) if out.strip() else []
    return [i for i in items if isinstance(i, dict)]
