-- append: ARGV[7] entry, ARGV[8] own (1/0), ARGV[9] check the share rule (1/0),
-- ARGV[10] the node appending, ARGV[11] the start of node channels
-- -> { 1, seq, first_seq, devices online } stored, or { 0, last_seq,
-- first_seq, 0 } refused because the inbox is full and this sender holds its
-- share already. A stored entry is published, once per node, to every other
-- node with an online device of the user: { seq, first_seq, user } and the
-- entry (the appending node hands it to its own shards itself).
local entry, own, check = ARGV[7], ARGV[8] == '1', ARGV[9] == '1'
local size = #entry - HEADER
local _, _, sender, from_device = header(entry)
if check and share < 100 and (n >= max_messages or (bytes + size > max_bytes and n > 0)) then
  local count, held = 0, 0
  for _, e in ipairs(redis.call('LRANGE', LIST, 0, -1)) do
    local _, o, s = header(e)
    if o == 0 and s == sender then
      count = count + 1
      held = held + #e - HEADER
    end
  end
  if count * 100 >= max_messages * share or held * 100 >= max_bytes * share then
    save()
    return { 0, last, first(), 0 }
  end
end
last = last + 1
bytes = bytes + size
redis.call('RPUSH', LIST, entry)
n = n + 1
dirty = true
if own then advance_over_own(from_device) end
while n > max_messages or (bytes > max_bytes and n > 1) do
  pop_front(1)
end
trim()
save()
local online, told = 0, {}
local me = tonumber(ARGV[10])
for i = 1, #devs, 4 do
  if devs[i + 2] == 0 then
    online = online + 1
    local node = devs[i + 3]
    if node ~= me and not told[node] then
      told[node] = true
      redis.call('PUBLISH', ARGV[11] .. node,
        struct.pack('>I6I6B', last, first(), #user) .. user .. entry)
    end
  end
end
return { 1, last, first(), online }
