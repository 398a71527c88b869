-- fetch: ARGV[7] device key, ARGV[8] after, ARGV[9] count
-- -> { first_seq, last_seq, acked, start, entries... }
local ib = open_inbox(KEYS[1], KEYS[2], ARGV[1])
local out = ib:window(tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]))
ib:save()
return out
