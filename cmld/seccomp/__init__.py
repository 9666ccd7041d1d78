"""Seccomp user-notification syscall emulation (c_seccomp).

`filter` runs in the container's first process before execve of init and returns the listener fd;
`supervisor` answers the notifications in cmld's event loop, dispatching to `emulate_mknod` and
`emulate_time`; `caller` reads the notified process, `procfs` holds the pure rules, `notify` is the
kernel API in between. `filter` is kept import-light and is not imported here.
"""
