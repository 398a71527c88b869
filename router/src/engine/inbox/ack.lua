-- ack: ARGV[7] device key, ARGV[8] seq (cumulative; lower is ignored)
-- -> { first_seq, last_seq }
local ib = open_inbox(KEYS[1], KEYS[2], ARGV[1])
local device, seq = tonumber(ARGV[7]), tonumber(ARGV[8])
local i = ib:find(device)
if i then
  local acked = math.max(ib.devs[i + 1], math.min(seq, ib.last))
  if acked ~= ib.devs[i + 1] then
    ib.devs[i + 1] = acked
    ib.dirty = true
  end
  ib:advance_over_own(device)
  ib:trim()
end
ib:save()
return { ib:first(), ib.last }
