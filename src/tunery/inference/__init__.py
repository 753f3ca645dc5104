"""Inference: base models loaded once, fine-tuned adapters attached on demand, text generation.
Free of HTTP and SQL: callers pass model folders and plain parameters."""
