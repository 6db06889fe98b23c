"""One-at-a-time ablation of a recipe: which lever helps which class?

Trains the recipe and, for each lever, the recipe with that lever switched to its baseline value
(levers are named sets of config overrides in ferjax/cli/ablation.py). Every variant is an ordinary
run in WORKDIR/<variant>/seed<k> (re-running skips finished ones); writes ablation.md,
ablation.json and ablation.png in WORKDIR.
"""

from __future__ import annotations

from ferjax.cli.ablation import LAUNCHERS, LEVERS, ablate
from ferjax.cli.flags import Parser, run


def main(argv: list[str] | None = None) -> int:
    p = Parser("ferjax ablate", __doc__.split("\n\n")[0], config=True)
    p.add_argument("--workdir", required=True, help="where the variants' workdirs and tables go")
    p.add_argument(
        "--levers",
        default="cleaning,sampling,augment,tta,model",
        help=f"comma-separated, from: {', '.join(LEVERS)}",
    )
    p.add_argument("--seeds", type=int, default=1, help="seeds per variant (train.seed 0..N-1)")
    p.add_argument("--parallel", type=int, default=1, help="variants at once (one GPU each)")
    p.add_argument("--launcher", default="local", choices=LAUNCHERS)
    args = p.parse(argv)
    levers = [lever.strip() for lever in args.levers.split(",") if lever.strip()]
    ablate(
        args.config,
        args.config_path,
        args.overrides,
        args.workdir,
        levers,
        args.seeds,
        args.parallel,
        args.launcher,
    )
    return 0


if __name__ == "__main__":
    run(main)
