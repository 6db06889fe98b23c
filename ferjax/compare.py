"""`python -m ferjax.compare`: compare finished runs side by side.

The tool is ferjax/tools/compare.py; this module is only its entry point.
"""

if __name__ == "__main__":
    from ferjax.tools.compare import main
    from ferjax.tools.flags import run

    run(main)
