"""HTTP: the FastAPI app, authentication and thin routes over the services."""
