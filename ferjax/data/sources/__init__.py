"""One reader per data format, registered in formats.py."""
