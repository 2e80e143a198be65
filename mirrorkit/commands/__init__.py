"""One module per command: a click adapter from options to one library call."""
