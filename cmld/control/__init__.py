"""The control interface: socket server, access policy and command handlers."""
