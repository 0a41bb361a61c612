"""Package data for the bootstrap container: the script and the field specs it is built from."""
