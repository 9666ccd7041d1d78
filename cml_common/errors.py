"""The root of every error the project raises on purpose. Each daemon has one base below it
(`cmld.errors.CmldError`, `scd.errors.ScdError`, `tpm2d.errors.Tpm2dError`), so a caller can tell
"refused, with a reason for the user" from a bug."""


class CmlError(Exception):
    """An expected failure with a message meant for the operator."""
