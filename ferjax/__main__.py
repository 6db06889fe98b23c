"""`python -m ferjax <tool> [flags]`: the `ferjax` command where its script is not on PATH."""

from ferjax.cli import main

if __name__ == "__main__":
    main()
