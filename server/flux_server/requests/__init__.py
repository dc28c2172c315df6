"""What a caller asks for and how it is resolved: the parameters, the style presets,
decoded uploads and an edit's inputs."""
