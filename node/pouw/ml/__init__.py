"""Machine learning: models, datasets, deterministic iterations, compression, aggregation."""
