"""Fixtures shared by every test tier.

The model fixtures (tiny random models, their ONNX exports, an Infer for every
task) live in ``tests/models_fixtures.py`` and are built only when a test asks.
"""

pytest_plugins = ["tests.models_fixtures"]
