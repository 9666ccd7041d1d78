"""Token implementations: one module per token type behind `base.Token`."""
