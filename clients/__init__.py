"""Kafka clients without Flink, for the services around the job and for the job's own set-up: client
properties, topic names and creation, the producer of input events, the snapshot consumer that
serving uses, and event files. Imports only udfs/ (records and wire)."""
