"""What users run around the job: the `freshrank` command line, the stream generator, the demos, the
benchmark, the plain single-process program it compares with, and evaluation reports. The top layer."""
