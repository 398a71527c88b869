-- One user's inbox in Redis: the rules of router/core/src/mailbox.rs
-- (count, bytes and age limits, device cursors, own sends skipped, the
-- share rule, released_through for new devices), applied atomically.
-- Each operation is this prelude followed by its own part; the result is
-- one script per operation (engine/inbox.rs).
--
-- KEYS[1]  the bucket's row hash: field = user, value = the row
-- KEYS[2]  the user's entry list (same bucket, same hash slot)
-- ARGV[1]  user   ARGV[2] now (Unix ms)
-- ARGV[3]  max_messages   ARGV[4] max_bytes   ARGV[5] max_age (ms)
-- ARGV[6]  sender share percent (100: no share rule)
-- ARGV[7..] the operation's own arguments
--
-- The row, MessagePack: { last_seq, released_through, bytes, devices },
-- devices flat: { device key, acked, offline since (0: online), node, ... }
-- (the node that last attached the device: where appends are published).
-- Entries: a 19-byte header (stored at ms, flags, sender key, device
-- key; remote_inbox.rs) and the encoded Message. Sequence numbers are
-- implicit: the list holds first_seq .. last_seq.
-- A row is kept once written, so a user's numbers never restart.

local ROWS, LIST = KEYS[1], KEYS[2]
local user = ARGV[1]
local now = tonumber(ARGV[2])
local max_messages = tonumber(ARGV[3])
local max_bytes = tonumber(ARGV[4])
local max_age = tonumber(ARGV[5])
local share = tonumber(ARGV[6])
local HEADER = 19

local last, rel, bytes, devs = 0, 0, 0, {}
local packed = redis.call('HGET', ROWS, user)
if packed then
  local row = cmsgpack.unpack(packed)
  last, rel, bytes, devs = row[1], row[2], row[3], row[4]
end
local n = redis.call('LLEN', LIST)
local dirty = false

local function header(entry)
  return struct.unpack('>I6BI6I6', entry)
end

local function first()
  return last + 1 - n
end

local function find(device)
  for i = 1, #devs, 4 do
    if devs[i] == device then return i end
  end
  return nil
end

local function pop_front(count)
  if count <= 0 then return end
  local popped = redis.call('LPOP', LIST, count)
  for _, entry in ipairs(popped) do
    bytes = bytes - (#entry - HEADER)
  end
  n = n - #popped
  dirty = true
end

-- Drops the front entries every known device acked; none without devices.
local function trim()
  if #devs == 0 then return end
  local lowest = devs[2]
  for i = 6, #devs, 4 do
    if devs[i] < lowest then lowest = devs[i] end
  end
  local count = math.min(n, lowest - first() + 1)
  if count > 0 then
    pop_front(count)
    rel = first() - 1
  end
end

local function sent_by(entry, device)
  local _, own, _, from_device = header(entry)
  return own == 1 and from_device == device
end

-- Moves the device's cursor over its own sends that directly follow it.
local function advance_over_own(device)
  local i = find(device)
  if not i then return end
  local f = first()
  while devs[i + 1] + 1 >= f and devs[i + 1] + 1 - f < n do
    local entry = redis.call('LINDEX', LIST, devs[i + 1] + 1 - f)
    if not sent_by(entry, device) then break end
    devs[i + 1] = devs[i + 1] + 1
    dirty = true
  end
end

-- Entries older than max_age go; so do devices offline for longer.
local function expire()
  while n > 0 do
    local stored = header(redis.call('LINDEX', LIST, 0))
    if stored + max_age > now then break end
    pop_front(1)
  end
  local kept, removed = {}, false
  for i = 1, #devs, 4 do
    local off = devs[i + 2]
    if off ~= 0 and off + max_age <= now then
      removed = true
    else
      for j = 0, 3 do kept[#kept + 1] = devs[i + j] end
    end
  end
  if removed then
    devs = kept
    dirty = true
    trim()
  end
end

local function save()
  if dirty then
    redis.call('HSET', ROWS, user, cmsgpack.pack({ last, rel, bytes, devs }))
  end
end

-- { first_seq, last_seq, acked, start, entries from start (at most count) }
-- for a device reading after `after`.
local function window(device, after, count)
  local i = find(device)
  local acked = 0
  if i then acked = devs[i + 1] end
  local start = math.max(math.max(after, acked) + 1, first())
  local out = { first(), last, acked, start }
  if count > 0 and start <= last then
    local from = start - first()
    for _, entry in ipairs(redis.call('LRANGE', LIST, from, from + count - 1)) do
      out[#out + 1] = entry
    end
  end
  return out
end

expire()
