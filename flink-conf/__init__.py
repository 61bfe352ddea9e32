"""freshrank's Flink settings (`config.yaml`), installed as the package `freshrank_flink_conf` so that a
wheel carries them (read through `job.paths.flink_conf_dir`). Flink itself reads only config.yaml."""
