"""The API adapters: REST (:mod:`flux_server.api.rest`) and gRPC
(:mod:`flux_server.api.grpc`). Each converts its wire types to and from the core's
(:mod:`flux_server.service`) and maps :mod:`flux_server.errors` to statuses."""
