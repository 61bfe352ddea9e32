"""freshrank job: pipeline wiring, command line and the clients around it."""
