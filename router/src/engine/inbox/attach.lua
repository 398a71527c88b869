-- attach: ARGV[7] device key, ARGV[8] resume point (-1: none), ARGV[9] count,
-- ARGV[10] the node attaching it
-- -> { after, first_seq, last_seq, acked, start, entries... }: delivery
-- continues after `after` (the resume point, else the device's cursor,
-- else, for a new device, released_through).
local ib = open_inbox(KEYS[1], KEYS[2], ARGV[1])
local device, resume, count = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local node = tonumber(ARGV[10])
if resume < 0 then resume = nil else resume = math.min(resume, ib.last) end
local after
local devs = ib.devs
local i = ib:find(device)
if i then
  devs[i + 2] = 0
  devs[i + 3] = node
  if resume then devs[i + 1] = resume end
  after = devs[i + 1]
else
  after = resume or ib.rel
  devs[#devs + 1] = device
  devs[#devs + 1] = after
  devs[#devs + 1] = 0
  devs[#devs + 1] = node
end
ib.dirty = true
ib:advance_over_own(device)
ib:trim()
ib:save()
local out = ib:window(device, after, count)
table.insert(out, 1, after)
return out
