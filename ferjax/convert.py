"""`python -m ferjax.convert`: ImageNet weight files for model.init_from.

The tool is ferjax/tools/convert.py; this module is only its entry point.
"""

if __name__ == "__main__":
    from ferjax.tools.convert import main
    from ferjax.tools.flags import run

    run(main)
