"""Visage: a portrait-generation WebUI with model management.

Importing this package does no work; every piece is built explicitly by
``modules.engine.Engine`` (the WebUI, the CLI and the tests all go through it).
"""

__version__ = "0.1.0"
