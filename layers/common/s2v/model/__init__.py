"""The model: jobs and their state machine, errors, and the pure rules on inputs (pairing, params,
media, reports). No I/O; nothing here imports from ``adapters`` or ``flows``."""
