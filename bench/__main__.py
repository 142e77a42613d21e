"""``python -m bench`` = the ``migm-bench`` command."""

from bench.cli import main

raise SystemExit(main())
