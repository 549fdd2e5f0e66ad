"""``python -m monitor`` is ``stormwatch``."""

from monitor.cli import main

main()
