"""``python -m whalecast`` is the same as the ``whalecast`` console script."""

from whalecast.cli import main

raise SystemExit(main())
