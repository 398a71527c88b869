-- attach: ARGV[7] device key, ARGV[8] resume point (-1: none), ARGV[9] count,
-- ARGV[10] the node attaching it
-- -> { after, first_seq, last_seq, acked, start, entries... }: delivery
-- continues after `after` (the resume point, else the device's cursor,
-- else, for a new device, released_through).
local device, resume, count = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local node = tonumber(ARGV[10])
if resume < 0 then resume = nil else resume = math.min(resume, last) end
local after
local i = find(device)
if i then
  devs[i + 2] = 0
  devs[i + 3] = node
  if resume then devs[i + 1] = resume end
  after = devs[i + 1]
else
  after = resume or rel
  devs[#devs + 1] = device
  devs[#devs + 1] = after
  devs[#devs + 1] = 0
  devs[#devs + 1] = node
end
dirty = true
advance_over_own(device)
trim()
save()
local out = window(device, after, count)
table.insert(out, 1, after)
return out
