"""Training loops that write self-describing run directories (checkpoints, logs, exported models)."""
