"""cml-rattestation: the remote attestation verifier (GyroidOS rattestation compatible)."""
