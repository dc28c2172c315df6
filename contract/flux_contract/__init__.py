"""flux_contract: what the fluxserve server, operator and SDK agree on, in one package.

It imports neither torch, nor an HTTP client, nor any of the three (an import-linter
contract holds it to that), so each of them can depend on it and on nothing of the others.

- ``wire``: the gRPC stubs (``pb``, ``pb_grpc``) with everything below that travels.
- ``reasons``: each error reason with its one HTTP status and one gRPC code.
- ``headers``: the HTTP header and gRPC metadata names both sides use.
- ``status``: gRPC's rich error status, built and read.
- ``names``: names users type (presets, experiments, arms) and their ASCII forms.
- ``presets``, ``experiments``: the files the operator writes and the server reads.
- ``experiment_counts``: the body of ``GET /experiments``.
- ``metrics``: the Prometheus metric and label names dashboards and alerts query.
- ``flags``: a settings model as flags and ``FLUXSERVE_*`` variables (server and operator).
"""
