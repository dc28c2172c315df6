"""flux_server: the fluxserve inference server (FLUX on diffusers behind gRPC and REST)."""
