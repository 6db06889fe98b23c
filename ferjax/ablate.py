"""`python -m ferjax.ablate`: one-at-a-time ablation of a recipe.

The tool is ferjax/tools/ablate.py; this module is only its entry point.
"""

if __name__ == "__main__":
    from ferjax.tools.ablate import main
    from ferjax.tools.flags import run

    run(main)
