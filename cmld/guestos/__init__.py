"""GuestOSes: `store` (the `operatingsystems/` directory), `install` (verification at load and
PUSH_GUESTOS_CONFIG with image download and checks), `ca_store` (registered CAs)."""
