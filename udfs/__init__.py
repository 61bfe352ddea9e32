"""freshrank operators: Flink function shells over plain, cluster-free logic."""
