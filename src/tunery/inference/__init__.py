"""Inference: base models loaded once, fine-tuned adapters attached on demand, text generation.
Free of HTTP and SQL: callers pass the Weights the models service resolved and plain parameters."""
