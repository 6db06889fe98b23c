"""`python -m ferjax.main --config=FILE --workdir=DIR`: train a model (the same as
`ferjax train`; the tool is ferjax/cli/train.py)."""

if __name__ == "__main__":
    from ferjax.runtime import platform

    platform.reexec_with_malloc_tuning("ferjax.main")  # before JAX and TensorFlow are imported
    from ferjax.cli.flags import run_training_command
    from ferjax.cli.train import main

    run_training_command(main)
