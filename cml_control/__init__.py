"""cml-control and control: the command-line clients of cmld's control socket."""
