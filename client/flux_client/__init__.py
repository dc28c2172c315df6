"""flux_client: the Python SDK for fluxserve (gRPC and REST), and the wire types."""
