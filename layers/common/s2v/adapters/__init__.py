"""Adapters: every touch of AWS or the provider (DynamoDB job store, S3 objects, secrets, events,
the streamed delivery, provider clients). They import the model, never the flows."""
