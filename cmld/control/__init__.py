"""The control interface (the original's daemon/control.c).

`server` serves the socket (the shared framed server with cmld's bad-input policy), `access`
decides which commands a client may use, `dispatcher` routes a request and answers refusals,
`family` is what handler families share. Handlers, one file per family: `query_commands`,
`config_commands`, `lifecycle_commands`, `exec_commands`, `token_commands`,
`device_access_commands`, `guestos_commands`, `provisioning_commands`, `system_commands`;
`replies` builds the original's reply shapes.
"""
