"""cml_common package."""
