"""Command-line tools that are not the server: tiny random models for tests and demos,
and the safety filter's evaluation."""
