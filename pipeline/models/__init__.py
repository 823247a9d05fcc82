"""The model side: ONNX export and its cache, ORT sessions, tokenizers, batching.

Nothing here knows about Kafka or about tasks; ``pipeline.tasks`` and
``pipeline.stages.infer`` build on it.
"""
