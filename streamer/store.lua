-- whalecast window store: the only writer of one series' keys, atomic per call.
--
-- KEYS[1] bars    sorted set, score = bar open time (ms), member = packed bar record
-- KEYS[2] window  string, the newest feature rows packed float32, oldest first
-- KEYS[3] meta    hash: last_open_ms, feature_version, window_rows, counters
--
-- ARGV[1] is the mode.
--
-- "append": ARGV[2] open_ms, [3] bar_ms, [4] base (the last open time the caller
--   computed the feature row on, '' for an empty series), [5] feature_version,
--   [6] window_rows, [7] allow_gap ('1' or '0'), [8] bar member, [9] feature row
--   ('' when the caller did not expect to append), [10] bars kept, [11] ttl ms,
--   [12] one all-NaN feature row (stands in for each missing bar of an allowed gap).
--   Replies {status, open_ms}:
--     {'duplicate', last}   open time not newer than the stored last: nothing written
--     {'gap', expected}     open time past last + bar_ms without allow_gap: nothing written
--     {'stale', last}       the caller's view (base, feature version, window) is not the
--                           stored one: nothing written, the caller reloads and retries
--     {'appended', open_ms} bar, row and meta written, bars trimmed, TTLs renewed
--
-- "replace": ARGV[2] last_open_ms, [3] feature_version, [4] window_rows, [5] window,
--   [6] ttl ms, [7..] score, member pairs. Rewrites the series' state in one step
--   (warm-up after a backfill, rebuild after a feature-list version change).

local bars_key, window_key, meta_key = KEYS[1], KEYS[2], KEYS[3]
local mode = ARGV[1]

local function renew(ttl_ms)
  redis.call('PEXPIRE', bars_key, ttl_ms)
  redis.call('PEXPIRE', window_key, ttl_ms)
  redis.call('PEXPIRE', meta_key, ttl_ms)
end

local function append()
  local open_ms, bar_ms = tonumber(ARGV[2]), tonumber(ARGV[3])
  local version, rows = ARGV[5], tonumber(ARGV[6])
  local meta = redis.call('HMGET', meta_key, 'last_open_ms', 'feature_version', 'window_rows')
  local last = meta[1]
  local missing = 0
  if last then
    local last_ms = tonumber(last)
    if open_ms <= last_ms then return {'duplicate', last_ms} end
    if meta[2] ~= version or meta[3] ~= ARGV[6] then return {'stale', last_ms} end
    if open_ms > last_ms + bar_ms and ARGV[7] ~= '1' then return {'gap', last_ms + bar_ms} end
    missing = (open_ms - last_ms) / bar_ms - 1
  end
  if (last or '') ~= ARGV[4] or ARGV[9] == '' then return {'stale', tonumber(last) or -1} end

  local row = ARGV[9]
  local window = ''
  if last then
    window = redis.call('GET', window_key) or ''
  else
    redis.call('DEL', bars_key, window_key) -- a fresh series starts from nothing
  end
  if missing > 0 then window = window .. string.rep(ARGV[12], math.min(missing, rows)) end
  window = window .. row
  if #window > rows * #row then window = string.sub(window, -rows * #row) end
  redis.call('SET', window_key, window)

  local kept = tonumber(ARGV[10])
  redis.call('ZADD', bars_key, ARGV[2], ARGV[8])
  redis.call('ZREMRANGEBYSCORE', bars_key, '-inf', string.format('%.0f', open_ms - kept * bar_ms))
  redis.call('HSET', meta_key, 'last_open_ms', ARGV[2], 'feature_version', version,
    'window_rows', ARGV[6])
  redis.call('HINCRBY', meta_key, 'appended', 1)
  if missing > 0 then redis.call('HINCRBY', meta_key, 'gap_bars', missing) end
  renew(ARGV[11])
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

if mode == 'append' then return append() end
if mode == 'replace' then return replace() end
return redis.error_reply('unknown mode ' .. tostring(mode))
