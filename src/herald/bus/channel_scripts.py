"""The Lua scripts of one shard of the sharded bus (docs/architecture.md, D28).

Keys of a shard: ``shard`` (hash: ``origin``, ``ms``, ``seq``, ``index``), and
per channel ``log`` (a Stream), ``meta`` (hash: ``floor``, ``seq``) and
idempotency keys. Every channel key expires a while after the channel's
last event, so a shard holds only the channels active within the window.

Cursors are one order across shards: ``ms-(n × 64 + index + 1)``. ``ms`` is the
shard's hybrid logical clock: the largest of Redis's ``TIME``, the shard's
last ``ms`` and the caller's ``hint`` (its newest cursor), so a shard whose
clock is behind is pulled forward by what the nodes have seen; ``n`` counts
the cursors issued in that millisecond; ``index`` (below 64) is the shard's
place in ``HERALD_REDIS_SHARDS``. No two shards issue the same cursor, every
shard's cursors increase, and no shard issues ``ms-0``: a node that knows
every shard has issued all it will below ``ms`` may say it has delivered
everything up to ``ms-0`` (its position when nothing flows). A shard that finds another index recorded
refuses: the list's order changed, and channels would move.

``now`` is the caller's clock in milliseconds, or empty for Redis's own ``TIME``:
production uses Redis's clock; tests pass a fake one to move time.

``origin`` names the shard's lifetime, as the single log's does (D12): a
shard restarted empty starts a new one, after the caller's hint, so a
cursor of the lost lifetime is older than the new origin and cannot pass
for one of it.

A channel's ``floor`` is what D5 asks of it: nothing after the floor has
been trimmed. Its log expires a while after its last event; its meta (floor,
sequence, last cursor) a day later, so a log that expired still says up to
where its entries went. A channel with no meta had no event in this
lifetime of the shard, or none for a day: its floor is the later of the
origin and a day ago. Replay after cursor ``c`` on a channel is exact when the
shard's lifetime began at or before ``c`` and the channel's floor is at or
before ``c``.
"""

from __future__ import annotations

from typing import Final

#: The clock, cursors as stream ids.
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

#: Trimming a channel's stream by the window and a count, recording the floor (``XTRIM``
#: does not record what it removed; only these scripts trim).
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

#: Shards a deployment may have: the shard's index is the low bits of a cursor's sequence.
MAX_SHARDS: Final = 64

_COMMON: Final = (
    IDS
    + TRIM
    + r"""
local MAX_SHARDS = 64

-- The shard's lifetime: {origin, ms, seq}, starting a new one if the shard lost it.
local function shard_state(shard, now, hint_ms, index)
  local state = redis.call('HMGET', shard, 'origin', 'ms', 'seq', 'index')
  if state[1] then
    if tonumber(state[4]) ~= index then
      return redis.error_reply('HERALD_SHARD_INDEX this shard is index ' .. state[4] .. ', not ' .. index)
    end
    return {state[1], tonumber(state[2]), tonumber(state[3])}
  end
  local ms = math.max(now, hint_ms + 1)
  local origin = fmt(ms, 0)
  redis.call('HSET', shard, 'origin', origin, 'ms', ms, 'seq', 0, 'index', index)
  return {origin, ms, 0}
end

-- The next cursor of the shard: its clock advanced to at least now and the hint, and the
-- cursor above the hint (``hint_ms-hint_seq``, the caller's newest), so a caller's
-- appends, one after another, get increasing cursors whatever shards they go to.
local function next_cursor(shard, clock, now, hint_ms, hint_seq, index)
  local t = math.max(now, hint_ms)
  if t > clock[2] then
    clock[2] = t
    clock[3] = 0
  else
    clock[3] = clock[3] + 1
  end
  if clock[2] == hint_ms then
    local above = math.floor((hint_seq - index - 1) / MAX_SHARDS) + 1
    if clock[3] < above then clock[3] = above end
  end
  return fmt(clock[2], clock[3] * MAX_SHARDS + index + 1)
end

local function save_clock(shard, clock)
  redis.call('HSET', shard, 'ms', clock[2], 'seq', clock[3])
end

-- Move the clock to ``t`` if it is behind: no cursor issued later is below ``t``-0.
local function advance_clock(shard, clock, t)
  if t > clock[2] then
    clock[2] = t
    clock[3] = -1
    save_clock(shard, clock)
  end
end

-- A channel's meta outlives its log (a day at least): a log that expired with its last
-- entry leaves ``last`` behind, and everything up to it is gone. A channel without meta
-- had nothing in this lifetime of the shard, or nothing for a day.
local META_KEEP_MS = 86400000
local function channel_floor(log, meta, origin, now, window_ms)
  local state = redis.call('HMGET', meta, 'floor', 'last')
  local floor = state[1]
  if floor then
    if state[2] and redis.call('EXISTS', log) == 0 and not id_le(state[2], floor) then
      return state[2]
    end
    return floor
  end
  local start = fmt(math.max(now - math.max(META_KEEP_MS, window_ms), 0), 0)
  if id_le(start, origin) then return origin end
  return start
end

-- Whether the shard lost ``known``: a cursor of its lifetime ``origin`` that a node saw it
-- issue on the channel of ``log``/``meta`` (the node's newest there). A replica promoted
-- after a failover may lack what the primary acknowledged last; its clock alone cannot
-- tell once any node appended (each append moves the clock to now), the entry can. Not
-- lost: the entry is there, was trimmed (the floor passed it), or expired with its log
-- (``last`` passed it, or it is older than a channel's meta lives).
local function lost_known(log, meta, origin, known, now)
  if known == '' or not id_le(origin, known) then return false end
  if #redis.call('XRANGE', log, known, known) > 0 then return false end
  local state = redis.call('HMGET', meta, 'floor', 'last')
  if state[1] and id_le(known, state[1]) then return false end
  if redis.call('EXISTS', log) == 0 then
    if state[2] and id_le(known, state[2]) then return false end
    if now - parse_id(known) >= META_KEEP_MS then return false end
  end
  return true
end

-- Start the shard's next lifetime after ``hint_ms`` and its clock (REBIRTH's step).
local function renew(shard, clock, now, hint_ms)
  local ms = math.max(now, hint_ms + 1, clock[2] + 1)
  local origin = fmt(ms, 0)
  redis.call('HSET', shard, 'origin', origin, 'ms', ms, 'seq', 0)
  return {origin, ms, 0}
end

-- A channel's records after ``after`` (at most ``count``) if D5 lets them be replayed
-- exactly from there: {1, entries}; else {0, floor}. ``first``: the first page of a read
-- applies the retention first.
local function read_after(log, meta, origin, after, now, window_ms, max_events, count, first)
  if not id_le(origin, after) then return {0, origin} end
  if first then trim(log, meta, now, window_ms, max_events, 0) end
  local floor = channel_floor(log, meta, origin, now, window_ms)
  if not id_le(floor, after) then return {0, floor} end
  return {1, redis.call('XRANGE', log, '(' .. after, '+', 'COUNT', count)}
end

"""
)

#: Appends to channels of one shard, in order, each as if alone.
#: KEYS: shard, then per item: the channel's log, meta, idempotency key (if any),
#: superseded keys, its retained hash (if it retains); then, with a known cursor, the log
#: and meta of its channel.
#: ARGV: now, window_ms, max_events (per channel), idempotency_window_ms, hint_ms,
#: shard index, notification channel prefix, items (msgpack: a list of
#: [channel, has idempotency key (0/1), superseded key count, retain ms (0: not retained),
#: coalesce key ('' when not retained), field, value, ...]), hint_seq,
#: known: the newest cursor the caller saw the shard issue, or empty. A shard that lost it
#: (a failover to a replica that lagged) starts its next lifetime before appending.
#: Each new entry is published on ``prefix .. channel`` as msgpack
#: [cursor, the channel's sequence, field, value, ...].
#: A retained item (D33) becomes its coalesce key's value in the channel's retained hash,
#: msgpack [expires ms, cursor, field, value, ...], in the same step as its entry: the
#: retained state is never newer or older than the log.
#: Returns {origin, cursor 1, duplicate 1, ...}.
APPEND: Final = (
    _COMMON
    + r"""
local shard = KEYS[1]
local now = now_ms(ARGV[1])
local window_ms, max_events = tonumber(ARGV[2]), tonumber(ARGV[3])
local idem_window = tonumber(ARGV[4])
local hint_ms, index, prefix = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local hint_seq = tonumber(ARGV[9])
local clock = shard_state(shard, now, hint_ms, index)
if clock.err then return clock end
local known = ARGV[10] or ''
if known ~= '' and lost_known(KEYS[#KEYS - 1], KEYS[#KEYS], clock[1], known, now) then
  clock = renew(shard, clock, now, math.max(hint_ms, (parse_id(known))))
end
local reply = {clock[1]}
local key = 2
-- Keys live a window past their channel's last event, and at least an idempotency window.
local keep_ms = math.max(window_ms, idem_window) + 60000
for _, item in ipairs(cmsgpack.unpack(ARGV[8])) do
  local channel = item[1]
  local log, meta = KEYS[key], KEYS[key + 1]
  key = key + 2
  local idem = nil
  if item[2] == 1 then
    idem = KEYS[key]
    key = key + 1
  end
  local superseded = {}
  for i = 1, item[3] do
    superseded[i] = KEYS[key]
    key = key + 1
  end
  local retain_ms, retained = tonumber(item[4]), nil
  if retain_ms > 0 then
    retained = KEYS[key]
    key = key + 1
  end
  local seen = idem and redis.call('GET', idem)
  local cursor, duplicate = nil, 0
  if seen then
    local first, expires = string.match(seen, '^(%S+) (%d+)$')
    if first and tonumber(expires) > now then cursor, duplicate = first, 1 end
  end
  if duplicate == 0 then
    local floor = channel_floor(log, meta, clock[1], now, window_ms)
    if redis.call('EXISTS', log) == 0 then redis.call('HSET', meta, 'floor', floor) end
    if redis.call('EXISTS', meta) == 0 then redis.call('HSET', meta, 'floor', floor, 'seq', 0) end
    cursor = next_cursor(shard, clock, now, hint_ms, hint_seq, index)
    local fields = {unpack(item, 6)}
    redis.call('XADD', log, cursor, unpack(fields))
    local remembered = cursor .. ' ' .. string.format('%.0f', now + idem_window)
    if idem then redis.call('SET', idem, remembered, 'PX', idem_window) end
    for _, k in ipairs(superseded) do redis.call('SET', k, remembered, 'PX', idem_window, 'NX') end
    trim(log, meta, now, window_ms, max_events, 1)
    local seq = redis.call('HINCRBY', meta, 'seq', 1)
    redis.call('HSET', meta, 'last', cursor)
    redis.call('PEXPIRE', log, keep_ms)
    redis.call('PEXPIRE', meta, math.max(META_KEEP_MS, keep_ms))
    if retained then
      redis.call('HSET', retained, item[5], cmsgpack.pack({now + retain_ms, cursor, unpack(fields)}))
      if redis.call('PTTL', retained) < retain_ms then redis.call('PEXPIRE', retained, retain_ms) end
    end
    redis.call('PUBLISH', prefix .. channel, cmsgpack.pack({cursor, seq, unpack(fields)}))
  end
  reply[#reply + 1] = cursor
  reply[#reply + 1] = duplicate
end
save_clock(shard, clock)
return reply
"""
)

#: One page of a channel's replay. KEYS: shard, log, meta.
#: ARGV: now, window_ms, max_events, after, count, origin ('' on the first page), index.
#: The first page applies the retention, then asks whether ``after`` can be replayed
#: exactly; later pages, whether the shard's lifetime is the same and trimming has not
#: passed their start. Returns {0, floor, origin} when not exact ({0} when the shard has
#: no lifetime), else {1, origin, entries}.
REPLAY_PAGE: Final = (
    _COMMON
    + r"""
local shard, log, meta = KEYS[1], KEYS[2], KEYS[3]
local now = now_ms(ARGV[1])
local window_ms, max_events = tonumber(ARGV[2]), tonumber(ARGV[3])
local after, origin = ARGV[4], ARGV[6]
local live_origin = redis.call('HGET', shard, 'origin')
if not live_origin then return {0} end
if origin ~= '' and origin ~= live_origin then return {0} end
local count = tonumber(ARGV[5])
local page = read_after(log, meta, live_origin, after, now, window_ms, max_events, count, origin == '')
if page[1] == 0 then return {0, page[2], live_origin} end
return {1, live_origin, page[2]}
"""
)

#: Catch up channels a node just followed, in one call: the first replay page of each
#: (as REPLAY_PAGE), with the shard's clock moved to at least ``advance_ms`` in the same
#: step: whatever the channels get after this read has a cursor above ``advance_ms``-0
#: (a node catching up channels it just followed must not see them get cursors below its
#: head later; a shard without a lifetime starts one). KEYS: shard, then per channel:
#: log, meta. ARGV: now, window_ms, max_events, count, index, advance_ms, then per
#: channel: after. Returns {origin, then per channel {1, entries} or {0, floor}}.
CATCH_UP: Final = (
    _COMMON
    + r"""
local shard = KEYS[1]
local now = now_ms(ARGV[1])
local window_ms, max_events, count = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local index, advance = tonumber(ARGV[5]), tonumber(ARGV[6])
local clock = shard_state(shard, now, advance, index)
if clock.err then return clock end
advance_clock(shard, clock, math.max(now, advance))
local reply = {clock[1]}
local n = 0
for k = 2, #KEYS, 2 do
  n = n + 1
  local log, meta, after = KEYS[k], KEYS[k + 1], ARGV[6 + n]
  reply[#reply + 1] = read_after(log, meta, clock[1], after, now, window_ms, max_events, count, true)
end
return reply
"""
)

#: The opening of the scripts that take KEYS: shard; ARGV: now, hint_ms, index: the
#: shard's lifetime and clock (``clock``), started if it has none.
_SHARD_CLOCK: Final = r"""
local shard = KEYS[1]
local now = now_ms(ARGV[1])
local hint_ms, index = tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = shard_state(shard, now, hint_ms, index)
if clock.err then return clock end
"""

#: Move the shard's clock to at least ``hint_ms`` (and now): every cursor it issues later
#: is above ``hint_ms``-0. KEYS: shard, then with a known cursor the log and meta of its
#: channel. ARGV: now, hint_ms, index, known (as APPEND's: a shard that lost it starts its
#: next lifetime).
#: Returns {origin, ms, clock ms, clock n}: the shard issues no cursor below ``ms``-0
#: from here on; its clock as it was found (the last cursor it issued is
#: ``clock ms``-(``clock n`` × 64 + index + 1), none in that ms when n is -1). A clock
#: behind a cursor the shard is known to have issued means it was restored from an
#: older snapshot.
PROBE: Final = (
    _COMMON
    + _SHARD_CLOCK
    + r"""
local known = ARGV[4] or ''
if known ~= '' and lost_known(KEYS[2], KEYS[3], clock[1], known, now) then
  clock = renew(shard, clock, now, math.max(hint_ms, (parse_id(known))))
end
local found_ms, found_n = clock[2], clock[3]
advance_clock(shard, clock, math.max(now, hint_ms))
return {clock[1], string.format('%.0f', clock[2]), string.format('%.0f', found_ms), found_n}
"""
)

#: Start a new lifetime of a shard that was restored from an older snapshot, unless
#: another node already did. KEYS: shard. ARGV: now, hint_ms, index, the origin the
#: caller knew. Returns the shard's origin: a new one after ``hint_ms`` and the clock.
REBIRTH: Final = (
    _COMMON
    + _SHARD_CLOCK
    + r"""
if clock[1] ~= ARGV[4] then return clock[1] end
return renew(shard, clock, now, hint_ms)[1]
"""
)


#: The retained states of channels of one shard (D33), expired ones dropped on the way.
#: KEYS: per channel, its retained hash. ARGV: now. Returns per channel the live values
#: (msgpack [expires ms, cursor, field, value, ...]).
RETAINED: Final = (
    IDS
    + r"""
local now = now_ms(ARGV[1])
local reply = {}
for k = 1, #KEYS do
  local flat = redis.call('HGETALL', KEYS[k])
  local live = {}
  for i = 1, #flat, 2 do
    local value = flat[i + 1]
    if tonumber(cmsgpack.unpack(value)[1]) <= now then
      redis.call('HDEL', KEYS[k], flat[i])
    else
      live[#live + 1] = value
    end
  end
  reply[k] = live
end
return reply
"""
)
