"""The transport-free core: :class:`~flux_server.service.core.GenerationService`, the
flow of a generation, an edit or a question between an API adapter and the engine."""
