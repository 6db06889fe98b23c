"""`python -m ferjax.evaluate`: evaluate a run's checkpoint on a split or another data file.

The tool is ferjax/tools/evaluate.py; this module is only its entry point.
"""

if __name__ == "__main__":
    from ferjax.tools.evaluate import main
    from ferjax.tools.flags import run

    run(main)
