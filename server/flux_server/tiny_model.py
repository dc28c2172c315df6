"""``python -m flux_server.tiny_model``, the documented command: the tool itself is
:mod:`flux_server.tools.tiny_model`."""

import sys

from flux_server.tools.tiny_model import main

if __name__ == "__main__":
    sys.exit(main())
