"""scd's one error base: every refusal scd raises on purpose derives from it, so a handler can
answer it with the original's reply code and treat anything else as a bug."""

from cml_common.errors import CmlError


class ScdError(CmlError):
    """An expected failure in scd (a bad certificate, a wrong PIN, a broken token file...)."""
