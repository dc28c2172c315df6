"""Async jobs: their states and events, where they are kept (memory or Redis), who may
read them, their webhooks and their HTTP shapes."""
