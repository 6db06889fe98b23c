"""`python -m ferjax.preview`: augmentation preview grid.

The tool is ferjax/tools/preview.py; this module is only its entry point.
"""

if __name__ == "__main__":
    from ferjax.tools.flags import run
    from ferjax.tools.preview import main

    run(main)
