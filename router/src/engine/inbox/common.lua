-- Users' inboxes in Redis: the rules of router/core/src/mailbox.rs (count,
-- bytes and age limits, device cursors, own sends skipped, the share rule,
-- released_through for new devices), applied atomically. Each operation is
-- this prelude followed by its own part; the result is one script per
-- operation (engine/inbox.rs).
--
-- ARGV[1]  user   ARGV[2] now (Unix ms)
-- ARGV[3]  max_messages   ARGV[4] max_bytes   ARGV[5] max_age (ms)
-- ARGV[6]  sender share percent (100: no share rule)
-- ARGV[7..] the operation's own arguments
-- KEYS[1]  the user's bucket's row hash: field = user, value = the row
-- KEYS[2]  the user's entry list (same bucket, same hash slot)
--
-- The row, MessagePack: { last_seq, released_through, bytes, devices,
-- entries held, the oldest one's stored-at ms (0: not known) }, devices
-- flat: { device key, acked, offline since (0: online), node, ... } (the
-- node that last attached the device: where appends are published). The
-- count and the oldest entry's time spare a LLEN and a LINDEX per call.
-- Entries: a 19-byte header (stored at ms, flags, sender key, device
-- key; remote_inbox.rs) and the encoded Message. Sequence numbers are
-- implicit: the list holds first_seq .. last_seq.
-- A row is kept once written, so a user's numbers never restart.

local now = tonumber(ARGV[2])
local max_messages = tonumber(ARGV[3])
local max_bytes = tonumber(ARGV[4])
local max_age = tonumber(ARGV[5])
local share = tonumber(ARGV[6])
local HEADER = 19

local function header(entry)
  return struct.unpack('>I6BI6I6', entry)
end

local Inbox = {}
Inbox.__index = Inbox

-- The inbox of `user` (row in hash `rows`, entries in list `list`), with
-- what has aged out dropped.
local function open_inbox(rows, list, user)
  local ib = setmetatable({ rows = rows, list = list, user = user,
    last = 0, rel = 0, bytes = 0, devs = {}, n = 0, front = 0, dirty = false }, Inbox)
  local packed = redis.call('HGET', rows, user)
  if packed then
    local row = cmsgpack.unpack(packed)
    ib.last, ib.rel, ib.bytes, ib.devs = row[1], row[2], row[3], row[4]
    -- Rows written before the count was kept count their list.
    ib.n, ib.front = row[5] or redis.call('LLEN', list), row[6] or 0
  end
  ib:expire()
  return ib
end

function Inbox:first()
  return self.last + 1 - self.n
end

function Inbox:find(device)
  local devs = self.devs
  for i = 1, #devs, 4 do
    if devs[i] == device then return i end
  end
  return nil
end

function Inbox:pop_front(count)
  if count <= 0 then return end
  local popped = redis.call('LPOP', self.list, count)
  for _, entry in ipairs(popped) do
    self.bytes = self.bytes - (#entry - HEADER)
  end
  self.n = self.n - #popped
  self.front = 0
  self.dirty = true
end

-- Drops the front entries every known device acked; none without devices.
function Inbox:trim()
  local devs = self.devs
  if #devs == 0 then return end
  local lowest = devs[2]
  for i = 6, #devs, 4 do
    if devs[i] < lowest then lowest = devs[i] end
  end
  local count = math.min(self.n, lowest - self:first() + 1)
  if count > 0 then
    self:pop_front(count)
    self.rel = self:first() - 1
  end
end

-- Moves the device's cursor over its own sends that directly follow it.
function Inbox:advance_over_own(device)
  local i = self:find(device)
  if not i then return end
  local devs, f = self.devs, self:first()
  while devs[i + 1] + 1 >= f and devs[i + 1] + 1 - f < self.n do
    local index = devs[i + 1] + 1 - f
    local entry = (index == self.n - 1 and self.tail)
      or redis.call('LINDEX', self.list, index)
    local _, own, _, from_device = header(entry)
    if not (own == 1 and from_device == device) then break end
    devs[i + 1] = devs[i + 1] + 1
    self.dirty = true
  end
end

-- Entries older than max_age go; so do devices offline for longer.
function Inbox:expire()
  while self.n > 0 do
    if self.front == 0 then
      self.front = header(redis.call('LINDEX', self.list, 0))
    end
    if self.front + max_age > now then break end
    self:pop_front(1)
  end
  local kept, removed, devs = {}, false, self.devs
  for i = 1, #devs, 4 do
    local off = devs[i + 2]
    if off ~= 0 and off + max_age <= now then
      removed = true
    else
      for j = 0, 3 do kept[#kept + 1] = devs[i + j] end
    end
  end
  if removed then
    self.devs = kept
    self.dirty = true
    self:trim()
  end
end

function Inbox:save()
  if self.dirty then
    redis.call('HSET', self.rows, self.user,
      cmsgpack.pack({ self.last, self.rel, self.bytes, self.devs, self.n, self.front }))
  end
end

-- { first_seq, last_seq, acked, start, entries from start (at most count) }
-- for a device reading after `after`.
function Inbox:window(device, after, count)
  local i = self:find(device)
  local acked = 0
  if i then acked = self.devs[i + 1] end
  local start = math.max(math.max(after, acked) + 1, self:first())
  local out = { self:first(), self.last, acked, start }
  if count > 0 and start <= self.last then
    local from = start - self:first()
    for _, entry in ipairs(redis.call('LRANGE', self.list, from, from + count - 1)) do
      out[#out + 1] = entry
    end
  end
  return out
end

-- Appends `entry` (own: a copy of the user's own send; check: apply the
-- share rule), then publishes it to every node other than `me` with an
-- online device of the user, on channels `channels` .. node.
-- -> { 1, seq, first_seq, devices online } stored, or { 0, last_seq,
-- first_seq, 0 } refused: the inbox is full and this sender holds its share.
function Inbox:append(entry, own, check, me, channels)
  local size = #entry - HEADER
  local _, _, sender, from_device = header(entry)
  if check and share < 100
      and (self.n >= max_messages or (self.bytes + size > max_bytes and self.n > 0)) then
    local count, held = 0, 0
    for _, e in ipairs(redis.call('LRANGE', self.list, 0, -1)) do
      local _, o, s = header(e)
      if o == 0 and s == sender then
        count = count + 1
        held = held + #e - HEADER
      end
    end
    if count * 100 >= max_messages * share or held * 100 >= max_bytes * share then
      self:save()
      return { 0, self.last, self:first(), 0 }
    end
  end
  self.last = self.last + 1
  self.bytes = self.bytes + size
  redis.call('RPUSH', self.list, entry)
  if self.n == 0 then self.front = header(entry) end
  self.n = self.n + 1
  self.tail = entry
  self.dirty = true
  if own then self:advance_over_own(from_device) end
  while self.n > max_messages or (self.bytes > max_bytes and self.n > 1) do
    self:pop_front(1)
  end
  self:trim()
  self:save()
  local online, told, devs = 0, {}, self.devs
  for i = 1, #devs, 4 do
    if devs[i + 2] == 0 then
      online = online + 1
      local node = devs[i + 3]
      if node ~= me and not told[node] then
        told[node] = true
        redis.call('PUBLISH', channels .. node,
          struct.pack('>I6I6B', self.last, self:first(), #self.user) .. self.user .. entry)
      end
    end
  end
  return { 1, self.last, self:first(), online }
end
