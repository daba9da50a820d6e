"""whalecast: streaming LSTM inference for crypto markets.

The kernel package holds only what every part shares: settings, logging,
normalized record types, the Redis key layout, the prediction schema and the
model-artifact format. It imports nothing else of ours.
"""

__version__ = "0.1.0"
