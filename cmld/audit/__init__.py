"""cmld's audit subsystem (the original's daemon/audit.c, extended): records of security events,
the per-container queues a container's audit reader pulls with SHA-512 ACKs, the hash-chained
journal with checkpoints signed by the device key, and forwarding to a syslog collector."""
