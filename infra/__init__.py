"""Local infrastructure for development, tests and demos: a single-node KRaft broker, a Flink standalone
cluster, free ports and process checks. Imports job/ (Flink settings, jars) and clients/."""
