"""The commands (run, validate, demo, ctl): composition roots above admin and gateway."""
