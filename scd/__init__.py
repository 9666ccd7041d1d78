"""scd package."""
