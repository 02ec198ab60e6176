"""Model references and their weights, without torch: what `info`, `apply` and `stack` need."""
