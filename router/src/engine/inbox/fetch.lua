-- fetch: ARGV[7] device key, ARGV[8] after, ARGV[9] count
-- -> { first_seq, last_seq, acked, start, entries... }
local out = window(tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]))
save()
return out
