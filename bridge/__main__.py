"""Allow ``python -m bridge``."""

from bridge.app.cli import main

raise SystemExit(main())
