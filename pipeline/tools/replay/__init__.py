"""Replay recorded requests through a candidate pipeline and compare its answers with the recorded ones."""
