"""``python -m flux_operator``: run the operator, or one of its commands.

python -m flux_operator [run] [--namespace NS ...] [--peering NAME] [--health-port 8081]
python -m flux_operator render FILE          # the objects a FluxDeployment turns into
python -m flux_operator history NAME [-n NS] # its revisions
python -m flux_operator rollback NAME --to RELEASE [-n NS]
"""

from __future__ import annotations

import sys

from flux_operator.cli import main

if __name__ == "__main__":
    sys.exit(main())
