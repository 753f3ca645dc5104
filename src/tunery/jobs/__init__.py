"""The job queue's consumer: the worker process that validates, trains and publishes models,
orchestrating the services (queue, files, models) and a training method's recipe."""
