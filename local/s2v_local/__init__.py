"""The embedded local stack: moto server, WaveSpeed emulator and a template-driven event router."""
