"""The audit journal's format and its verifier, shared by cmld (which writes it) and the tools
that read and check it (`cml-control audit`): one hash-chained JSON line per entry, with
checkpoints signed by the device key."""
