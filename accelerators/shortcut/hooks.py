"""Registers the ``shortcut`` accelerator and the ``migm-bench shortcut ...`` commands.

Light on purpose (``bench.lazy``, ``bench.subcommands``): the accelerator's module and each
command's module are imported when used, not at every ``migm-bench`` start-up.
"""

from accelerators.hooks import lazy_accelerator, registering
from bench.hookspecs import hookimpl
from bench.subcommands import DeferredParser

register_accelerators = registering(
    lazy_accelerator(
        "shortcut",
        "accelerators.shortcut.accelerator",
        "Shortcut",
        "MIGM-Shortcut: B of N full steps, a learned feature shortcut in between",
        (
            {"steps": 16, "budget": 8},
            {"steps": 16, "budget": 6},
            {"steps": 16, "budget": 4},
            {"steps": 32, "budget": 6},
            {"steps": 16, "budget": 6, "variant": "nocross"},
        ),
    )
)


# sub-command -> (its module: add_arguments(parser), run(args); the one-line help)
COMMANDS = {
    "collect": ("accelerators.shortcut.collect", "record the base model's feature trajectories"),
    "train": ("accelerators.shortcut.train", "train the shortcut network on recorded trajectories"),
    "cost": ("accelerators.shortcut.cost", "per-call FLOPs and latency of the shortcut vs a base forward"),
    "overhead": ("accelerators.shortcut.overhead", "the loop's own cost and the shortcut's share of S*"),
    "dimoo-cost": (
        "accelerators.shortcut.dimoo_cost",
        "DiMOO-Shortcut's per-call FLOPs vs a Lumina-DiMOO 8B forward at its real shapes (no weights)",
    ),
}


@hookimpl
def register_commands(subparsers):
    parser = subparsers.add_parser("shortcut", help="MIGM-Shortcut: collect trajectories, train the shortcut")
    commands = parser.add_subparsers(
        dest="shortcut_command",
        metavar="{" + ",".join(COMMANDS) + "}",
        required=True,
        parser_class=DeferredParser,
    )
    for name, (module, help_text) in COMMANDS.items():
        commands.add_parser(name, help=help_text, module=module)
