"""``python -m ops`` is ``ark``."""

from ops.cli import main

main()
