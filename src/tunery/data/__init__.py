"""Training data: parsing and validating files, rendering examples into token ids and loss masks."""
