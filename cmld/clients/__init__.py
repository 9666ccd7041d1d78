"""cmld's clients of the other daemons, transport only (no file I/O): `scd` (tokens, keys,
signature verification, device identity over SOCK_SEQPACKET)."""
