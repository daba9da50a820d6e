-- whalecast publisher: one bar's predictions in one call (on a plain server; a
-- Cluster client sends the same commands in a pipeline instead).
--
-- KEYS[1] the predictions stream; KEYS[2 .. H + 1] the latest-value hashes, one per
-- model; KEYS[H + 2 ..] the handover marks, one per series.
-- ARGV[1] the pub/sub channel, ARGV[2] the stream's MAXLEN (approximate), ARGV[3] the
-- stream entry's field, ARGV[4] the number of hashes H, ARGV[5] the number of messages
-- N, then N quadruples: hash (index into KEYS, 2 .. H + 1), series tag, the message's
-- field in the hash, message; then one pair per mark key, in KEYS order: bar open time
-- (ms), TTL (ms).
--
-- Each message, in order: PUBLISH channel message; XADD stream MAXLEN ~ N * field
-- message; then HSET hash field message (gathered per hash, several pairs per HSET, each
-- HSET after the PUBLISH and XADD of its messages: a hash showing a bar means the bar
-- went out on the channel and the stream). The marks come last, SET key open_ms PX
-- ttl, after every output: never a mark without its prediction. Series whose mark
-- already shows the bar are skipped (see below).
-- Replies {number of messages published, tag of each series skipped ...}.

local channel, maxlen, field = ARGV[1], ARGV[2], ARGV[3]
local hashes, count = 1 + tonumber(ARGV[4]), tonumber(ARGV[5]) -- the last hash's index
local PAIRS_PER_HSET = 400 -- keeps unpack() well inside Lua's stack limit
local pending = {}

local function flush(index)
  local pairs = pending[index]
  if pairs ~= nil and #pairs > 0 then
    redis.call('HSET', KEYS[index], unpack(pairs))
    pending[index] = {}
  end
end

local last_message = 5 + 4 * count

-- A series whose mark already shows this bar (or a later one) was published by
-- another replica (two overlap during a rolling update): nothing of it goes out
-- again, and its mark is left alone.
local skipped, reply = {}, {0} -- reply: {published, skipped tags ...}
for k = hashes + 1, #KEYS do
  local a = last_message + 1 + 2 * (k - hashes - 1)
  if tonumber(redis.call('GET', KEYS[k]) or '-1') >= tonumber(ARGV[a]) then
    local tag = string.match(KEYS[k], '{(.*)}:predicted$')
    skipped[tag] = true
    reply[#reply + 1] = tag
  end
end

local published = 0
for i = 6, last_message, 4 do
  local index, tag, message = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 3]
  if not skipped[tag] then
    published = published + 1
    redis.call('PUBLISH', channel, message)
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', field, message)
    local pairs = pending[index]
    if pairs == nil then
      pairs = {}
      pending[index] = pairs
    end
    pairs[#pairs + 1] = ARGV[i + 2]
    pairs[#pairs + 1] = message
    if #pairs >= 2 * PAIRS_PER_HSET then flush(index) end
  end
end
for index = 2, hashes do flush(index) end

for k = hashes + 1, #KEYS do
  local a = last_message + 1 + 2 * (k - hashes - 1)
  if not skipped[string.match(KEYS[k], '{(.*)}:predicted$')] then
    redis.call('SET', KEYS[k], ARGV[a], 'PX', ARGV[a + 1])
  end
end
reply[1] = published
return reply
