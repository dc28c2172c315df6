"""The gRPC adapter: the ``FluxService`` servicer (:mod:`.servicer`), its async-job and
experiment RPCs, and the interceptor that authenticates and bounds every call
(:mod:`.guard`)."""
