"""Market data in: candle and whale feeds, backfill, features and the Redis window store."""
