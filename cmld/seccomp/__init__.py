"""Seccomp (c_seccomp): the policy, the compiled filter and the user-notification emulations.

`policy` says what an ordinary container may call; `filter` compiles it (or c0's light filter)
once in cmld into raw BPF, which the container's first process and every exec helper load with
`cmld.linux.seccomp.load_filter`; `supervisor` answers the notifications in cmld's event loop,
dispatching to `emulate_mknod`, `emulate_time`, `emulate_reboot` and `emulate_inotify` (with
`inotify_broker`, cmld's end of the process that makes a no-userns container's inotify
instances on its own account); `caller` reads the notified
process, `procfs` holds the pure rules, `notify` is the kernel API in between. `filter` imports
libseccomp and is not imported here.
"""
