"""A finished run: loading it, exporting it, finding faces in photos."""
