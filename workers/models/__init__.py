"""Models: the registry of built-in models, their objectives and the flat parameter vector."""
