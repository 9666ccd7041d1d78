"""cml-tpm2-control / tpm2_control: the CLI of tpm2d's control socket."""
