-- whalecast publisher: one bar's predictions in one call (on a plain server; a
-- Cluster client sends the same commands in a pipeline instead).
--
-- KEYS[1] the predictions stream; KEYS[2..] the latest-value hashes, one per model.
-- ARGV[1] the pub/sub channel, ARGV[2] the stream's MAXLEN (approximate), ARGV[3] the
-- stream entry's field, then triples: hash (index into KEYS, >= 2), series tag, message.
--
-- Each message, in order: PUBLISH channel message; XADD stream MAXLEN ~ N * field
-- message; and HSET hash tag message (gathered per hash, several pairs per HSET).
-- Replies the number of messages.

local channel, maxlen, field = ARGV[1], ARGV[2], ARGV[3]
local PAIRS_PER_HSET = 400 -- keeps unpack() well inside Lua's stack limit
local pending = {}

local function flush(index)
  local pairs = pending[index]
  if pairs ~= nil and #pairs > 0 then
    redis.call('HSET', KEYS[index], unpack(pairs))
    pending[index] = {}
  end
end

local count = 0
for i = 4, #ARGV, 3 do
  local index, tag, message = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2]
  redis.call('PUBLISH', channel, message)
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', field, message)
  local pairs = pending[index]
  if pairs == nil then
    pairs = {}
    pending[index] = pairs
  end
  pairs[#pairs + 1] = tag
  pairs[#pairs + 1] = message
  if #pairs >= 2 * PAIRS_PER_HSET then flush(index) end
  count = count + 1
end
for index = 2, #KEYS do flush(index) end
return count
