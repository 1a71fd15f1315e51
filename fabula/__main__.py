"""``python -m fabula``: the ``fabula`` command."""

from fabula.cli import main

raise SystemExit(main())
