-- whalecast publisher on a Redis Cluster, step 2 of 2: the channel and the handover
-- marks of the series of one hash slot (see inference/cluster_publish.py).
--
-- KEYS: handover marks of series of one slot, one per series and bar, bars in order.
-- ARGV[1] the pub/sub channel, then per key: the bar's open time (ms), the mark's TTL
-- (ms), number of messages C, C messages.
--
-- For each key whose mark does not show its bar yet: PUBLISH each message, then SET the
-- mark, in this one call. A mark showing the bar (or a later one) means the messages
-- went out already (an earlier attempt, or another replica): they are not sent again.
-- Replies {number of messages published, index in KEYS of each key skipped ...}.

local channel = ARGV[1]
local reply, a = {0}, 2
for k = 1, #KEYS do
  local count = tonumber(ARGV[a + 2])
  if tonumber(redis.call('GET', KEYS[k]) or '-1') >= tonumber(ARGV[a]) then
    reply[#reply + 1] = k
  else
    for j = a + 3, a + 2 + count do
      redis.call('PUBLISH', channel, ARGV[j])
    end
    redis.call('SET', KEYS[k], ARGV[a], 'PX', ARGV[a + 1])
    reply[1] = reply[1] + count
  end
  a = a + 3 + count
end
return reply
