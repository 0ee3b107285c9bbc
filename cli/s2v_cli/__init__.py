"""The s2v operator command (not part of the Lambda layer)."""
