"""``python -m flux_trainer train ...`` / ``python -m flux_trainer inspect FILE``."""

import sys

from flux_trainer.cli import main

if __name__ == "__main__":
    sys.exit(main())
