-- deliver: a direct message for its recipient (ARGV[1], KEYS[1..2]) and,
-- unless refused, the copy for its sender (ARGV[12], KEYS[3..4]), in one
-- step. ARGV[7] the recipient's entry (own = 0), ARGV[8] check the share
-- rule (1/0), ARGV[9] the node, ARGV[10] the start of node channels.
-- The sender's entry is the same with the own flag set.
-- -> { recipient's append answer..., sender's append answer... } (the
-- sender's { 0, 0, 0, 0 } when the recipient refused).
local entry = ARGV[7]
local me, channels = tonumber(ARGV[9]), ARGV[10]
local to = open_inbox(KEYS[1], KEYS[2], ARGV[1])
local got = to:append(entry, false, ARGV[8] == '1', me, channels)
local copy = { 0, 0, 0, 0 }
if got[1] == 1 then
  local own = entry:sub(1, 6) .. '\1' .. entry:sub(8)
  copy = open_inbox(KEYS[3], KEYS[4], ARGV[11]):append(own, true, false, me, channels)
end
return { got[1], got[2], got[3], got[4], copy[1], copy[2], copy[3], copy[4] }
