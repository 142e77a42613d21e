"""Sub-commands whose code is imported only when they are used.

A plugin's ``register_commands`` hook runs on every ``migm-bench`` invocation (``--help``
included), so a sub-command whose module imports torch would slow them all down. Give its
sub-parser ``parser_class=DeferredParser`` and the module's name: the module, which provides
``add_arguments(parser)`` and ``run(args) -> int`` (its docstring's first line is the
description), is imported when that sub-command is parsed or its ``--help`` is printed::

    commands = parser.add_subparsers(dest="shortcut_command", parser_class=DeferredParser)
    commands.add_parser("train", help="train the shortcut", module="accelerators.shortcut.train")
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from typing import Any


class DeferredParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose arguments come from ``module``, imported on first use."""

    def __init__(self, *args: Any, module: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._module = module

    def _load(self) -> None:
        if not self._module:
            return
        module, self._module = importlib.import_module(self._module), ""
        if self.description is None and module.__doc__:
            self.description = module.__doc__.strip().splitlines()[0]
        module.add_arguments(self)
        self.set_defaults(func=module.run)

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        self._load()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._load()
        return super().format_help()

    def format_usage(self) -> str:
        self._load()
        return super().format_usage()
