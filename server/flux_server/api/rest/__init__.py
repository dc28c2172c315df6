"""The REST adapter (FastAPI): converts HTTP to and from the service's types.

``POST /generate`` takes the article's JSON body and answers ``image/png`` (the first
image), or with ``Accept: application/json`` every image in base64 with seeds and
timings. Errors are ``{"error": {"code", "message", "field"}}`` with the status from
:data:`flux_server.errors.STATUS`.

- :mod:`.app`: the application, its exception handlers and middleware
- :mod:`.generation`: ``/generate``
- :mod:`.uploads`: ``/edit``, ``/vqa``
- :mod:`.operations`: ``/presets``, ``/healthz``, ``/readyz``, ``/metrics``
- :mod:`.wire`: headers, bodies and results; :mod:`.openapi`: documented headers and errors
- :mod:`.middleware`: the body limit and the request metrics
"""

from flux_server.api.rest.app import asgi_app, create_app
from flux_server.api.rest.operations import metrics_app

__all__ = ["asgi_app", "create_app", "metrics_app"]
