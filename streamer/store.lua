-- whalecast window store: the only writer of the series' keys, atomic per call.
--
-- Per series three keys (one Cluster slot, by the hash tag):
--   bars    sorted set, score = bar open time (ms), member = packed bar record
--   window  string, a ring of `window_rows` feature rows: a 12-byte header (feature-list
--           version, feature count, the slot of the newest row), then the rows packed
--           float32. The bar opening at t goes to slot floor(t / bar_ms) % window_rows, so
--           an append overwrites one row in place (SETRANGE) instead of rewriting the
--           window; rows never written (a new series, missing bars) are NaN
--   meta    hash: last_open_ms, feature_version, window_rows, window_layout, counters
-- KEYS come in threes (bars, window, meta), one series after another: on a plain
-- server every series of a bar in one call; on a Cluster one call per slot.
--
-- ARGV[1] is the mode.
--
-- "append": ARGV[2] window header without its slot (8 bytes), then five arguments per
--   series, in KEYS order: open_ms, base (the last open time the caller computed the
--   feature row on, '' for an empty series), bar member, feature row ('' when the caller
--   did not expect to append), parameters "bar_ms feature_version window_rows bars_kept
--   ttl_ms allow_gap(0|1)". Each series is handled on its own; replies a flat list with
--   a pair per series, {status_1, open_ms_1, status_2, open_ms_2, ...}:
--     {'duplicate', last}   open time not newer than the stored last: nothing written
--     {'gap', expected}     open time past last + bar_ms without allow_gap: nothing written
--     {'stale', last}       the caller's view (base, feature version, window, layout) is
--                           not the stored one: nothing written, the caller reloads and
--                           retries
--     {'appended', open_ms} bar, row and meta written, bars trimmed, TTLs renewed (see
--                           renew_due)
--   Each missing bar of an allowed gap becomes an all-NaN feature row.
--
-- "replace" (KEYS: one series): ARGV[2] last_open_ms, [3] feature_version,
--   [4] window_rows, [5] window (header and ring), [6] ttl ms, [7..] score, member
--   pairs. Rewrites the series' state in one step (warm-up after a backfill, rebuild
--   after a version change, a window stored in an older layout).

local HEADER = 12 -- the caller's 8 bytes, then the newest row's slot (uint32)
local LAYOUT = 'ring1' -- meta's window_layout: a window stored otherwise is 'stale'
local NAN32 = '\0\0\192\127' -- float32 quiet NaN, little-endian

local function renew(bars_key, window_key, meta_key, ttl_ms)
  redis.call('PEXPIRE', bars_key, ttl_ms)
  redis.call('PEXPIRE', window_key, ttl_ms)
  redis.call('PEXPIRE', meta_key, ttl_ms)
end

-- Writes `count` NaN rows ending just before `slot`, wrapping around the ring.
local function nan_rows(window_key, slot, count, rows, row_bytes)
  local nan_row = string.rep(NAN32, row_bytes / 4)
  local first = (slot - count) % rows
  local straight = math.min(count, rows - first)
  redis.call('SETRANGE', window_key, HEADER + first * row_bytes, string.rep(nan_row, straight))
  if count > straight then
    redis.call('SETRANGE', window_key, HEADER, string.rep(nan_row, count - straight))
  end
end

-- Renewing the TTLs at every bar was two of the append's nine calls.
-- They are renewed for a new series, after a gap, and when the bar's open time enters a
-- new quarter of the TTL: as bars come in (exchange time keeps up with wall time), a
-- key is renewed at least every quarter TTL plus a bar, and the TTL is never under four
-- bars (streamer/store_format.py key_ttl_ms).
local function renew_due(last_ms, open_ms, missing, ttl)
  if not last_ms or missing > 0 then return true end
  local quarter = math.max(1, math.floor(ttl / 4))
  return math.floor(open_ms / quarter) ~= math.floor(last_ms / quarter)
end

-- One series' append: keys, then open_ms (text), base, member, row, header, parameters.
local function append(bars_key, window_key, meta_key, open_text, base, member, row, header, params)
  local open_ms = tonumber(open_text)
  local bar_ms, version, rows, kept, ttl, allow_gap =
    string.match(params, '^(%d+) (%d+) (%d+) (%d+) (%d+) ([01])$')
  bar_ms = tonumber(bar_ms)
  local meta = redis.call('HMGET', meta_key, 'last_open_ms', 'feature_version', 'window_rows',
    'appended', 'window_layout')
  local last = meta[1]
  local missing = 0
  local last_ms = nil
  if last then
    last_ms = tonumber(last)
    if open_ms <= last_ms then return {'duplicate', last_ms} end
    if meta[2] ~= version or meta[3] ~= rows or meta[5] ~= LAYOUT then
      return {'stale', last_ms}
    end
    if open_ms > last_ms + bar_ms and allow_gap ~= '1' then return {'gap', last_ms + bar_ms} end
    missing = (open_ms - last_ms) / bar_ms - 1
  end
  if (last or '') ~= base or row == '' then return {'stale', tonumber(last) or -1} end

  rows = tonumber(rows)
  local slot = math.floor(open_ms / bar_ms) % rows
  local slot_bytes = struct.pack('<I4', slot)
  if not last then
    redis.call('DEL', bars_key) -- a fresh series starts from nothing
    local nan_row = string.rep(NAN32, #row / 4)
    redis.call('SET', window_key, header .. slot_bytes .. string.rep(nan_row, slot) .. row ..
      string.rep(nan_row, rows - slot - 1), 'PX', ttl)
  else
    local gap_rows = math.min(missing, rows - 1)
    if gap_rows > 0 then nan_rows(window_key, slot, gap_rows, rows, #row) end
    redis.call('SETRANGE', window_key, HEADER + slot * #row, row)
    redis.call('SETRANGE', window_key, HEADER - 4, slot_bytes)
  end

  redis.call('ZADD', bars_key, open_text, member)
  redis.call('ZREMRANGEBYSCORE', bars_key, '-inf', string.format('%.0f', open_ms - kept * bar_ms))
  local appended = tostring((tonumber(meta[4]) or 0) + 1)
  if last then -- feature_version and window_rows are already these (checked above)
    redis.call('HSET', meta_key, 'last_open_ms', open_text, 'appended', appended)
  else
    redis.call('HSET', meta_key, 'last_open_ms', open_text, 'feature_version', version,
      'window_rows', tostring(rows), 'window_layout', LAYOUT, 'appended', appended)
  end
  if missing > 0 then redis.call('HINCRBY', meta_key, 'gap_bars', missing) end
  if renew_due(last_ms, open_ms, missing, tonumber(ttl)) then
    renew(bars_key, window_key, meta_key, ttl)
  end
  return {'appended', open_ms}
end

local function append_all()
  local out = {}
  for i = 1, #KEYS / 3 do
    local k, a = 3 * (i - 1), 2 + 5 * (i - 1)
    local reply = append(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], ARGV[a + 1], ARGV[a + 2],
      ARGV[a + 3], ARGV[a + 4], ARGV[2], ARGV[a + 5])
    out[2 * i - 1] = reply[1]
    out[2 * i] = reply[2]
  end
  return out
end

local function replace()
  local bars_key, window_key, meta_key = KEYS[1], KEYS[2], KEYS[3]
  redis.call('DEL', bars_key)
  for i = 7, #ARGV, 2 do
    redis.call('ZADD', bars_key, ARGV[i], ARGV[i + 1])
  end
  redis.call('SET', window_key, ARGV[5], 'PX', ARGV[6])
  redis.call('HSET', meta_key, 'last_open_ms', ARGV[2], 'feature_version', ARGV[3],
    'window_rows', ARGV[4], 'window_layout', LAYOUT)
  redis.call('HINCRBY', meta_key, 'replaced', 1)
  renew(bars_key, window_key, meta_key, ARGV[6])
  return {'replaced', tonumber(ARGV[2])}
end

if ARGV[1] == 'append' then return append_all() end
if ARGV[1] == 'replace' then return replace() end
return redis.error_reply('unknown mode ' .. tostring(ARGV[1]))
