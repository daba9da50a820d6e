"""Market data in: candle and whale feeds, backfill, features, the window store, the simulator."""
