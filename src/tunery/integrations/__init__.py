"""Third-party integrations of fine-tuning jobs (Weights & Biases)."""
