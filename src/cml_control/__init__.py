"""cml_control package."""
