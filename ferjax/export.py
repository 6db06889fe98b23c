"""`python -m ferjax.export`: SavedModel / TFLite export of a run.

The tool is ferjax/tools/export.py; this module is only its entry point.
"""

if __name__ == "__main__":
    from ferjax.tools.export import main
    from ferjax.tools.flags import run

    run(main)
