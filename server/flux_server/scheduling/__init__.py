"""The queue in front of the accelerator: the batcher, what waits in it, and
cancelling work that is already running."""
