"""s2v: drop a portrait and a speech clip into S3, get a talking video back.

This package is the shared Lambda layer. It holds every decision the pipeline makes;
the handlers under ``functions/`` only translate AWS events into calls on it.
"""

__version__ = "0.1.0"
