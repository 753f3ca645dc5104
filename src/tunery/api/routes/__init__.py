"""One module per resource; each route gets its service, calls it and returns the result."""
