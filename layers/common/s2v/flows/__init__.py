"""Flows: what each trigger does (ingest, submit, status, poll, webhook, deliver), written over the
adapters and the model."""
