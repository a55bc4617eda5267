"""The query side's data: the answer snapshot built from the registry, and `explain`."""
