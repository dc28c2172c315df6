"""``python -m flux_server.safety_eval``, the documented command: the tool itself is
:mod:`flux_server.tools.safety_eval`."""

import sys

from flux_server.tools.safety_eval import main

if __name__ == "__main__":
    sys.exit(main())
