"""Per-container modules, one concern each, run in a fixed order (see `order.py`)."""
