-- append: ARGV[7] entry, ARGV[8] own (1/0), ARGV[9] check the share rule (1/0),
-- ARGV[10] the node appending, ARGV[11] the start of node channels
-- -> Inbox:append's answer. A stored entry is published, once per node, to
-- every other node with an online device of the user: { seq, first_seq,
-- user } and the entry (the appending node hands it to its own shards).
local ib = open_inbox(KEYS[1], KEYS[2], ARGV[1])
return ib:append(ARGV[7], ARGV[8] == '1', ARGV[9] == '1', tonumber(ARGV[10]), ARGV[11])
