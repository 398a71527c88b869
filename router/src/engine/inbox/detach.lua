-- detach: ARGV[7] device key; the device's last session closed now.
-- -> { first_seq, last_seq }
local i = find(tonumber(ARGV[7]))
if i then
  devs[i + 2] = now
  dirty = true
end
save()
return { first(), last }
