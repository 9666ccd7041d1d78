"""tpm2d package."""
