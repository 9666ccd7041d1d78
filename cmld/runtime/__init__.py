"""Running containers: the launcher handshake, the state machine, crash recovery."""
