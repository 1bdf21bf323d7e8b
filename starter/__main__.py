"""``python -m starter``: see ``starter.cli``."""

from starter.cli import main

main()
