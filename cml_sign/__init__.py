"""cml-sign: operator tooling (development PKI, signing, verification, signed GuestOS builds)."""
