"""The system data volume (the certification's "CML System Data Storage"): cmld's data directories
(`containers/`, `keys/`: configs, images, wrapped container keys, c0's raw key) on a LUKS2 volume
whose key is a secret tpm2d seals to a signed PCR-7 policy, with a recovery key.

| module | what |
|---|---|
| `config` | `<base>/sysdata.conf`: which device, its LUKS UUID, the sealed object's name |
| `volume` | format, open (mount and bind the data directories), close, erase (cryptsetup) |
| `cli` | `cml-sysdata setup / open / close / status`, run at boot by `cml-sysdata.service` |
"""
