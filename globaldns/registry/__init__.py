"""State only, no I/O: the merged model of every source, and the answer snapshot built from it."""
