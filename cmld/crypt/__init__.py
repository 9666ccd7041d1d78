"""Device-mapper volumes of containers (the original's common/cryptfs.c, common/verity.c) and the
tools behind them: dm-integrity under dm-crypt for container data, dm-verity for GuestOS images.

Everything goes through the cryptsetup family of tools (`dmsetup` with the original's tables on
stdin, `veritysetup`); no crypto is computed here. Device names are the original's
(`<container uuid>-<image>`, `...-integrity`), and the dm UUID of every device cmld makes starts
with `CML-`, so a restarted cmld finds and removes what a killed one left.

| module | what |
|---|---|
| `tools` | running a tool with its error message surfaced; secrets only on stdin |
| `dm` | dmsetup: availability, create, remove, list (from sysfs), status |
| `tables` | the original's dm-integrity and dm-crypt tables and its key split (pure) |
| `mode` | which dm mode a container's images use (`not-stacked`, legacy AUTHENC, plain) |
| `superblock` | the dm-integrity superblock: is a meta image formatted? (pure) |
| `fill` | the first format: zeroes through the stack, with progress (a subprocess) |
| `stack` | one encrypted image: loop devices, integrity + crypt devices, teardown |
| `verity` | dm-verity of GuestOS images (veritysetup) |
| `kmsg` | kernel error lines of dm-integrity, dm-crypt and dm-verity |
| `recovery` | stale devices a killed cmld left |
| `scrub` | destroying key files and image headers before they are unlinked |
"""
