"""The Lua scripts of the Redis bus: each runs atomically inside Redis.

Keys: ``log`` (the Stream), ``meta`` (hash: ``origin``, ``floor``).

``origin`` names the log's lifetime. A log whose stream or meta is missing
(Redis restarted empty, flushed, evicted) is started afresh with an origin
after every cursor the lost lifetime could have issued (after Redis's clock,
after the caller's newest cursor, after the stream's last id), so no cursor
of the lost log is ever taken for one of the new log. The new stream is
created with an entry at the origin, deleted at once: the stream's
last-generated id is then the origin and every later id lies above it.

``floor`` is the cursor of the last entry trimmed (the origin until then):
``XTRIM`` does not record what it removed (``max-deleted-entry-id`` counts
only ``XDEL``), so the trimming code records it. Only these scripts trim.

``now`` is the caller's clock in milliseconds, or empty for Redis's own
``TIME``: production uses Redis's clock, one clock for every node; tests
pass a fake one to move time.
"""

from __future__ import annotations

from typing import Final

#: Lua shared by the scripts of both Redis buses: the clock, cursors as stream ids.
IDS: Final = r"""
local function now_ms(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function parse_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function id_le(a, b)
  local am, as = parse_id(a)
  local bm, bs = parse_id(b)
  return am < bm or (am == bm and as <= bs)
end

local function fmt(ms, seq)
  return string.format('%.0f-%.0f', ms, seq)
end
"""

#: Lua shared by both buses: trimming a stream by the window and a count, recording the floor.
TRIM: Final = r"""
-- Drop entries older than the window or past the count; remember the last one dropped.
-- Both look from the front (cheap: XREVRANGE seeking back from an id costs hundreds of
-- microseconds on a long stream) and drop at most TRIM_BATCH entries (plus what the
-- call appended) per call: a backlog after a quiet spell or a lowered limit is worked
-- off over a few calls.
local TRIM_BATCH = 100
local function trim(log, meta, now, window_ms, max_events, appended)
  local limit = TRIM_BATCH + (appended or 0)
  local floor = nil
  local function drop_through(entries)
    floor = entries[#entries][1]
    local ms, seq = parse_id(floor)
    redis.call('XTRIM', log, 'MINID', fmt(ms, seq + 1))
  end
  if now > window_ms then
    local old = redis.call('XRANGE', log, '-', '(' .. fmt(now - window_ms, 0), 'COUNT', limit)
    if #old > 0 then drop_through(old) end
  end
  local excess = redis.call('XLEN', log) - max_events
  if excess > 0 then
    drop_through(redis.call('XRANGE', log, '-', '+', 'COUNT', math.min(excess, limit)))
  end
  if floor then redis.call('HSET', meta, 'floor', floor) end
end

"""

_COMMON: Final = (
    IDS
    + TRIM
    + r"""
local function last_generated(log)
  local info = redis.call('XINFO', 'STREAM', log)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then return info[i + 1] end
  end
  return '0-0'
end

-- The origin of the live log, creating a new lifetime if the log is gone.
local function ensure_log(log, meta, now, hint_ms)
  local origin = redis.call('HGET', meta, 'origin')
  local has_log = redis.call('EXISTS', log) == 1
  if origin and has_log then return origin end
  local ms = math.max(now, hint_ms + 1)
  if has_log then
    local last_ms = parse_id(last_generated(log))
    ms = math.max(ms, last_ms + 1)
    redis.call('DEL', log)
  end
  origin = fmt(ms, 0)
  redis.call('XADD', log, origin, 'origin', '1')
  redis.call('XDEL', log, origin)
  redis.call('DEL', meta)
  redis.call('HSET', meta, 'origin', origin, 'floor', origin)
  return origin
end

-- Append one entry with ``fields`` (a list: field, value, ...), unless ``idem`` (a key,
-- or nil) was seen within the window. ``superseded``: keys remembered with the new
-- entry's id unless known (SET NX). ``caller_clock``: ids from ``now`` rather than
-- Redis's clock, kept monotonic as Redis keeps its own (never below the newest id).
-- Returns id, duplicate (0/1).
local function append_entry(log, now, caller_clock, idem, superseded, window, fields)
  if idem then
    local seen = redis.call('GET', idem)
    if seen then
      local cursor, expires = string.match(seen, '^(%S+) (%d+)$')
      if cursor and tonumber(expires) > now then return cursor, 1 end
    end
  end
  local id
  if not caller_clock then
    id = redis.call('XADD', log, '*', unpack(fields))
  else
    id = redis.pcall('XADD', log, string.format('%.0f-*', now), unpack(fields))
    if type(id) == 'table' and id.err then
      local last_ms = parse_id(last_generated(log))
      id = redis.call('XADD', log, string.format('%.0f-*', last_ms), unpack(fields))
    end
  end
  local remembered = id .. ' ' .. string.format('%.0f', now + window)
  if idem then redis.call('SET', idem, remembered, 'PX', window) end
  for _, key in ipairs(superseded) do
    redis.call('SET', key, remembered, 'PX', window, 'NX')
  end
  return id, 0
end
"""
)

#: KEYS: log, meta. ARGV: now, hint_ms.
#: Returns {origin, floor, last-generated id}: what a node needs to start tailing.
OPEN: Final = (
    _COMMON
    + r"""
local origin = ensure_log(KEYS[1], KEYS[2], now_ms(ARGV[1]), tonumber(ARGV[2]))
return {origin, redis.call('HGET', KEYS[2], 'floor'), last_generated(KEYS[1])}
"""
)

#: Appends, in order, each as if alone; the log trimmed once after them.
#: KEYS: log, meta, then each item's idempotency key (if any) and superseded keys, in order.
#: ARGV: now, window_ms, max_events, idempotency_window_ms, hint_ms, then the items
#: (msgpack: a list of [has idempotency key (0/1), superseded key count, field, value, ...]).
#: Superseded keys (the throttle's, :mod:`herald.bus.throttle`) are remembered with the
#: new entry's id unless the append is a duplicate or the key is known (``SET NX``).
#: Returns {origin, cursor 1, duplicate 1, cursor 2, duplicate 2, ...}.
#:
#: Items travel as one msgpack value rather than as arguments: the Python client spends
#: microseconds encoding each argument of a command, and an entry has a dozen fields.
APPEND_MANY: Final = (
    _COMMON
    + r"""
local log, meta = KEYS[1], KEYS[2]
local now = now_ms(ARGV[1])
local window = tonumber(ARGV[4])
local caller_clock = ARGV[1] ~= ''
local origin = ensure_log(log, meta, now, tonumber(ARGV[5]))
local items = cmsgpack.unpack(ARGV[6])
local reply = {origin}
local key, appended = 3, 0
for _, item in ipairs(items) do
  local idem = nil
  if item[1] == 1 then
    idem = KEYS[key]
    key = key + 1
  end
  local superseded = {}
  for i = 1, item[2] do
    superseded[i] = KEYS[key]
    key = key + 1
  end
  local id, duplicate = append_entry(log, now, caller_clock, idem, superseded, window, {unpack(item, 3)})
  reply[#reply + 1] = id
  reply[#reply + 1] = duplicate
  appended = appended + 1 - duplicate
end
if appended > 0 then trim(log, meta, now, tonumber(ARGV[2]), tonumber(ARGV[3]), appended) end
return reply
"""
)

#: One page of a replay. KEYS: log, meta.
#: ARGV: now, window_ms, max_events, after, upto ('+': the newest), count, origin ('' on the first page).
#: The first page applies the retention first, then asks whether ``after`` can be
#: replayed exactly (it is the floor, or an entry still held); later pages ask
#: whether trimming has since passed their start, or the log was replaced.
#: Returns {0, floor} when not exact ({0} on a later page or a lost log), else {1, origin, entries}.
REPLAY_PAGE: Final = (
    _COMMON
    + r"""
local log, meta = KEYS[1], KEYS[2]
local after, origin = ARGV[4], ARGV[7]
local live_origin = redis.call('HGET', meta, 'origin')
if not live_origin or redis.call('EXISTS', log) == 0 then return {0} end
local exact
if origin == '' then
  trim(log, meta, now_ms(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), 0)
  local floor = redis.call('HGET', meta, 'floor')
  exact = after == floor or #redis.call('XRANGE', log, after, after) > 0
else
  exact = live_origin == origin and id_le(redis.call('HGET', meta, 'floor'), after)
end
if not exact then
  if origin == '' then return {0, redis.call('HGET', meta, 'floor')} end
  return {0}
end
return {1, live_origin, redis.call('XRANGE', log, '(' .. after, ARGV[5], 'COUNT', tonumber(ARGV[6]))}
"""
)
