"""`python -m ferjax.predict`: expressions of the faces in photos.

The tool is ferjax/tools/predict.py; this module is only its entry point.
"""

if __name__ == "__main__":
    from ferjax.tools.flags import run
    from ferjax.tools.predict import main

    run(main)
