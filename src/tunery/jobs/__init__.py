"""The job queue's consumer: a worker process that validates, trains and publishes models."""
