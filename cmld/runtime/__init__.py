"""Running containers.

`transitions` is the state machine (the only allowed state changes), `compartment` one
container's life (preconditions, start handshake, exit, stop, kill), `freezer` freezing,
`launch_spec` the spec a start begins with, `spawn` cmld's end of the launcher (sync channel,
init watcher), `records` the crash-recovery records, `registry` all compartments (recovery,
autostart, reboot, shutdown).
"""
