"""``python -m modules.cli``."""
import sys

from modules.cli.app import main

sys.exit(main())
