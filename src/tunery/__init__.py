"""tunery: the OpenAI fine-tuning API, self-hosted on open-weight models."""

__version__ = "0.1.0"
