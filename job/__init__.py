"""The freshrank Flink job: options, the dataflow (pipeline, batching), its connectors (files, Kafka),
the Flink environment, and the `flink run -py job/main.py` entry point. Imports udfs/ and clients/."""
