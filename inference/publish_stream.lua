-- whalecast publisher on a Redis Cluster, step 1 of 2: one bar's messages into the
-- stream, each series' at most once (see inference/cluster_publish.py).
--
-- KEYS[1] the predictions stream; KEYS[2] the stream's record (a hash in the stream's
-- slot: series tag -> open time of the newest bar whose messages were appended).
-- ARGV[1] the stream's MAXLEN (approximate), ARGV[2] the stream entry's field,
-- ARGV[3] the bar's open time (ms), ARGV[4] the record's TTL (ms), then per series:
-- tag, number of messages C, C messages.
--
-- A series whose record shows this bar (or a later one) already went into the stream
-- (an earlier attempt, or another replica): nothing of it is appended again.
-- Replies the number of messages appended.

local maxlen, field, bar = ARGV[1], ARGV[2], tonumber(ARGV[3])
local appended, i = 0, 5
while i <= #ARGV do
  local tag, count = ARGV[i], tonumber(ARGV[i + 1])
  if tonumber(redis.call('HGET', KEYS[2], tag) or '-1') < bar then
    for j = i + 2, i + 1 + count do
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', field, ARGV[j])
    end
    redis.call('HSET', KEYS[2], tag, ARGV[3])
    appended = appended + count
  end
  i = i + 2 + count
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return appended
