"""What a request passes before it may queue: readiness, API keys, the content policy,
the audit log and the result cache (:mod:`.gate` runs the steps)."""
