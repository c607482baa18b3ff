"""The engine: containers from images, their monitor, and the operations the CLI calls."""
