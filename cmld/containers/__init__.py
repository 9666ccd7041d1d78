"""Containers as cmld stores them: `container` (identity, config, state), `store` (the
`containers/` directory and the registry built from it), `keys` (the container key through scd,
the pairing marker), `config_trust` (whether a client's config may be used)."""
