-- whalecast window store: the only writer of one series' keys, atomic per call.
--
-- KEYS[1] bars    sorted set, score = bar open time (ms), member = packed bar record
-- KEYS[2] window  string: an 8-byte header (layout: feature-list version, feature
--                 count), then the newest feature rows packed float32, oldest first
-- KEYS[3] meta    hash: last_open_ms, feature_version, window_rows, counters
--
-- ARGV[1] is the mode.
--
-- "append": ARGV[2] open_ms, [3] base (the last open time the caller computed the
--   feature row on, '' for an empty series), [4] bar member, [5] feature row ('' when
--   the caller did not expect to append), [6] window header, [7] parameters
--   "bar_ms feature_version window_rows bars_kept ttl_ms allow_gap(0|1)".
--   Replies {status, open_ms}:
--     {'duplicate', last}   open time not newer than the stored last: nothing written
--     {'gap', expected}     open time past last + bar_ms without allow_gap: nothing written
--     {'stale', last}       the caller's view (base, feature version, window) is not the
--                           stored one: nothing written, the caller reloads and retries
--     {'appended', open_ms} bar, row and meta written, bars trimmed, TTLs renewed
--   Each missing bar of an allowed gap becomes an all-NaN feature row.
--
-- "replace": ARGV[2] last_open_ms, [3] feature_version, [4] window_rows, [5] window
--   (header and rows), [6] ttl ms, [7..] score, member pairs. Rewrites the series'
--   state in one step (warm-up after a backfill, rebuild after a version change).

local bars_key, window_key, meta_key = KEYS[1], KEYS[2], KEYS[3]
local HEADER = 8
local NAN32 = '\0\0\192\127' -- float32 quiet NaN, little-endian

local function renew(ttl_ms)
  redis.call('PEXPIRE', bars_key, ttl_ms)
  redis.call('PEXPIRE', window_key, ttl_ms)
  redis.call('PEXPIRE', meta_key, ttl_ms)
end

local function append()
  local open_ms = tonumber(ARGV[2])
  local bar_ms, version, rows, kept, ttl, allow_gap =
    string.match(ARGV[7], '^(%d+) (%d+) (%d+) (%d+) (%d+) ([01])$')
  bar_ms = tonumber(bar_ms)
  local meta = redis.call('HMGET', meta_key, 'last_open_ms', 'feature_version', 'window_rows')
  local last = meta[1]
  local missing = 0
  if last then
    local last_ms = tonumber(last)
    if open_ms <= last_ms then return {'duplicate', last_ms} end
    if meta[2] ~= version or meta[3] ~= rows then return {'stale', last_ms} end
    if open_ms > last_ms + bar_ms and allow_gap ~= '1' then return {'gap', last_ms + bar_ms} end
    missing = (open_ms - last_ms) / bar_ms - 1
  end
  local row = ARGV[5]
  if (last or '') ~= ARGV[3] or row == '' then return {'stale', tonumber(last) or -1} end

  local body = ''
  if last then
    body = string.sub(redis.call('GET', window_key) or '', HEADER + 1)
  else
    redis.call('DEL', bars_key) -- a fresh series starts from nothing
  end
  rows = tonumber(rows)
  if missing > 0 then
    body = body .. string.rep(string.rep(NAN32, #row / 4), math.min(missing, rows))
  end
  body = body .. row
  if #body > rows * #row then body = string.sub(body, -rows * #row) end
  redis.call('SET', window_key, ARGV[6] .. body)

  redis.call('ZADD', bars_key, ARGV[2], ARGV[4])
  redis.call('ZREMRANGEBYSCORE', bars_key, '-inf', string.format('%.0f', open_ms - kept * bar_ms))
  redis.call('HSET', meta_key, 'last_open_ms', ARGV[2], 'feature_version', version,
    'window_rows', tostring(rows))
  redis.call('HINCRBY', meta_key, 'appended', 1)
  if missing > 0 then redis.call('HINCRBY', meta_key, 'gap_bars', missing) end
  renew(ttl)
  return {'appended', open_ms}
end

local function replace()
  redis.call('DEL', bars_key)
  for i = 7, #ARGV, 2 do
    redis.call('ZADD', bars_key, ARGV[i], ARGV[i + 1])
  end
  redis.call('SET', window_key, ARGV[5])
  redis.call('HSET', meta_key, 'last_open_ms', ARGV[2], 'feature_version', ARGV[3],
    'window_rows', ARGV[4])
  redis.call('HINCRBY', meta_key, 'replaced', 1)
  renew(ARGV[6])
  return {'replaced', tonumber(ARGV[2])}
end

if ARGV[1] == 'append' then return append() end
if ARGV[1] == 'replace' then return replace() end
return redis.error_reply('unknown mode ' .. tostring(ARGV[1]))
