"""A Kafka-native scatter-gather inference pipeline: filter → split → infer → merge."""

__version__ = "0.1.0"
