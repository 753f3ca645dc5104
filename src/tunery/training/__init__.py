"""Training: hyperparameter resolution and the supervised fine-tuning recipe. Free of HTTP and SQL."""
