"""Exchange simulator: Binance spot and Whale Alert protocols on 127.0.0.1, replaying history.

sim = Simulator(SimulatorConfig(history_bars=300))
await sim.start()
... point ccxt at sim.rest_url / sim.ws_url, the whale client at sim.whale_url ...
await sim.advance(bars=1)
await sim.stop()
"""

from streamer.simulator.faults import KLINE_FAULTS, WHALE_FAULTS, Faults
from streamer.simulator.simulator import Simulator, SimulatorConfig

__all__ = ["KLINE_FAULTS", "WHALE_FAULTS", "Faults", "Simulator", "SimulatorConfig"]
