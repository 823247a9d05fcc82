"""``pipeline bench``: the pipeline measured side by side with what it is built on.

One run, on the same texts and the same cores: raw ONNX Runtime at its best
batch (the limit), transformers eager, a naive per-message Kafka consumer, and
the pipeline under each processing guarantee. :mod:`.stats` is the pure math,
:mod:`.baselines` the in-process rows, :mod:`.through` the Kafka rows,
:mod:`.report` the table and JSON. Nothing is asserted: the ratios are the result.
"""
