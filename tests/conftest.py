"""Fixtures shared by every test tier.

The model fixtures (tiny random models, their ONNX exports, an Infer for every
task) live in ``tests/models_fixtures.py`` and are built only when a test asks;
the secure broker and the pipeline on it (tests/integration/test_security.py)
in ``tests/integration/secure_fixtures.py``, likewise.
"""

pytest_plugins = ["tests.models_fixtures", "tests.integration.secure_fixtures"]
