-- ack: ARGV[7] device key, ARGV[8] seq (cumulative; lower is ignored)
-- -> { first_seq, last_seq }
local device, seq = tonumber(ARGV[7]), tonumber(ARGV[8])
local i = find(device)
if i then
  local acked = math.max(devs[i + 1], math.min(seq, last))
  if acked ~= devs[i + 1] then
    devs[i + 1] = acked
    dirty = true
  end
  advance_over_own(device)
  trim()
end
save()
return { first(), last }
