"""scd, the security helper daemon (the original's scd/).

`main` wires it; `server` is the SOCK_SEQPACKET socket; `service` dispatches each DaemonToToken to
`token_commands` (tokens, PINs, pairing, key wrap) or `crypto_commands` (hash, verify); `tokens/`
holds one module per token type behind `tokens/base.Token`; `verify`, `chain`, `trust` check
signatures and certificate chains; `identity` and `devicekey` are the device's UUID, key, CSR and
certificate; `lockout` the wrong-PIN counter; `pairing` the pairing records; `watchdog` the USB
token presence check; `errors` the one error base.
"""
