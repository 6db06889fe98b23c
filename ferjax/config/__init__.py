"""Config validation and command-line overrides."""
