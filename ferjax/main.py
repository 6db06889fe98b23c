"""`python -m ferjax.main`: train a model (configs/*.py).

The tool is ferjax/tools/main.py; this module is only its entry point.
"""

if __name__ == "__main__":
    from ferjax import platform

    platform.reexec_with_malloc_tuning("ferjax.main")  # before JAX and TensorFlow are imported
    from ferjax.tools.flags import run
    from ferjax.tools.main import main

    run(main)
