-- detach: ARGV[7] device key; the device's last session closed now.
-- -> { first_seq, last_seq }
local ib = open_inbox(KEYS[1], KEYS[2], ARGV[1])
local i = ib:find(tonumber(ARGV[7]))
if i then
  ib.devs[i + 2] = now
  ib.dirty = true
end
ib:save()
return { ib:first(), ib.last }
