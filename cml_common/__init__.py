"""What every program of the suite shares: `framing`/`aioframing` (the wire framing, blocking and
asyncio), `framed_server` (the one server loop of the daemons), `messages` (code generated from
`proto/`), `textconfig` (lenient protobuf text configs), `errors` (the root error), `paths` (default
paths and the base-directory layout), `logsetup`, `sdnotify`, `daemonize`, `daemon_args`,
`daemon_runner` (a daemon's life), `fsutil` (atomic writes)."""
