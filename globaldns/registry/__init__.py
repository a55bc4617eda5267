"""State only, no I/O, no config, no DNS: the model of a service and the store that merges
every source."""
