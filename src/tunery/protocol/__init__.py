"""Wire types only: the request and response bodies of the API, shaped like the openai SDK's types."""
