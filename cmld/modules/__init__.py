"""Per-container modules, one aspect each, run in the fixed order of `order.py`.

`base` is the lifecycle contract (prepare, post_clone, pre_exec, post_exec, stop, cleanup,
destroy), `context` what one start shares (typed handles between modules), `settings` the
options every container gets. Aspects: `userns`, `cgroups`, `devices`, `network`, `volumes`,
`service`, `control_socket` (c0), `halt`, `timens`, `capabilities`, `seccomp`; `exec_session`
runs commands in a container (c_run).
"""
