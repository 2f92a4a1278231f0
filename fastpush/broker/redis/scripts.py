"""The Lua scripts the Redis broker runs. Each runs atomically, so a lookup and the publish it
decides are one step, and an entry whose node is dead (no `{p}:alive:{node}` key) never counts."""

__all__ = ["SCRIPTS"]

# A connection's operation, published to the node holding it: -1 when no live node does.
_ROUTE_TO_CONNECTION = """
local node = redis.call('HGET', KEYS[1], 'node')
if not node or redis.call('EXISTS', ARGV[1] .. ':alive:' .. node) == 0 then return -1 end
return redis.call('PUBLISH', ARGV[1] .. ':n:' .. node, ARGV[2])
"""
# A user's operation, published once to each live node holding one of its connections.
_ROUTE_TO_USER = """
local seen, receivers = {}, 0
for _, node in ipairs(redis.call('HVALS', KEYS[1])) do
  if not seen[node] and redis.call('EXISTS', ARGV[1] .. ':alive:' .. node) == 1 then
    seen[node] = true
    receivers = receivers + redis.call('PUBLISH', ARGV[1] .. ':n:' .. node, ARGV[2])
  end
end
return receivers
"""
# A hash's fields whose value names (before any `|`) a live node.
_LIVE_FIELDS = """
local out = {}
local values = redis.call('HGETALL', KEYS[1])
for i = 1, #values, 2 do
  local node = string.match(values[i + 1], '^[^|]*')
  if redis.call('EXISTS', ARGV[1] .. ':alive:' .. node) == 1 then
    table.insert(out, values[i]); table.insert(out, values[i + 1])
  end
end
return out
"""
# A live connection's roles (JSON), or nil.
_CONNECTION = """
local fields = redis.call('HMGET', KEYS[1], 'node', 'roles')
if not fields[1] or redis.call('EXISTS', ARGV[1] .. ':alive:' .. fields[1]) == 0 then return false end
return fields[2] or '[]'
"""
# Remove every entry a node wrote.
_FORGET_NODE = """
local prefix, node = ARGV[1], ARGV[2]
local index = prefix .. ':conns:' .. node
for _, entry in ipairs(redis.call('SMEMBERS', index)) do
  local hub, cid = string.match(entry, '^(.-)%z(.*)$')
  local conn = prefix .. ':c:' .. hub .. ':' .. cid
  local user = redis.call('HGET', conn, 'user')
  if user and user ~= '' then redis.call('HDEL', prefix .. ':u:' .. hub .. ':' .. user, cid) end
  for _, group in ipairs(redis.call('SMEMBERS', prefix .. ':cg:' .. hub .. ':' .. cid)) do
    redis.call('HDEL', prefix .. ':g:' .. hub .. ':' .. group, cid)
  end
  redis.call('DEL', conn, prefix .. ':cg:' .. hub .. ':' .. cid)
end
redis.call('DEL', index)
redis.call('SREM', prefix .. ':nodes', node)
return 1
"""

# A reliable session's holder (ARGV[1]) reserves it for the node asking (token ARGV[2]): 0 if it
# does not hold it by Redis's account.
_RESERVE_SESSION = """
if redis.call('HGET', KEYS[1], 'node') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'moving', ARGV[2])
return 1
"""
# Move a reserved session (KEYS[1], its `c:` key) to the node ARGV[5], in one step with the
# announcement on the hub's channel (ARGV[7]) that its holder and its new node both see in the
# same place among everything else: the holder keeps what came before it, the new node what
# follows. 0 if the reservation (ARGV[6]) was replaced, the session ended or its holder died.
# ARGV: prefix, hub (lower case), connection id, its `conns:` entry, to, token, announcement.
_MOVE_SESSION = """
local prefix, hub, cid, entry, to = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local fields = redis.call('HMGET', KEYS[1], 'node', 'moving', 'user')
local from = fields[1]
if not from or fields[2] ~= ARGV[6] or redis.call('EXISTS', prefix .. ':alive:' .. from) == 0 then return 0 end
local user = fields[3] or ''
redis.call('HSET', KEYS[1], 'node', to)
redis.call('HDEL', KEYS[1], 'moving')
redis.call('SREM', prefix .. ':conns:' .. from, entry)
redis.call('SADD', prefix .. ':conns:' .. to, entry)
if user ~= '' then redis.call('HSET', prefix .. ':u:' .. hub .. ':' .. user, cid, to) end
for _, group in ipairs(redis.call('SMEMBERS', prefix .. ':cg:' .. hub .. ':' .. cid)) do
  redis.call('HSET', prefix .. ':g:' .. hub .. ':' .. group, cid, to .. '|' .. user)
end
redis.call('PUBLISH', prefix .. ':h:' .. hub, ARGV[7])
return 1
"""
# 1 if a live node other than ARGV[2] is not draining.
_OTHERS_SERVING = """
local prefix = ARGV[1]
for _, node in ipairs(redis.call('SMEMBERS', prefix .. ':nodes')) do
  if node ~= ARGV[2] and redis.call('EXISTS', prefix .. ':alive:' .. node) == 1
      and redis.call('EXISTS', prefix .. ':draining:' .. node) == 0 then
    return 1
  end
end
return 0
"""

# A send to a cached group: numbered from the hub's counter, kept in the group's list (the newest
# ARGV[3]), the hub's bounds kept (at most ARGV[4] groups and ARGV[5] bytes: the group sent to least
# recently goes first; an entry larger than the bytes drops its group's list), and published on the
# group's channel, all in one step. KEYS: the group's list, the hub's groups by latest number, its
# bytes, its counter. ARGV: channel, envelope, depth, max groups, max bytes, list key prefix, group.
_LAST_VALUE = """
local seq = redis.call('INCR', KEYS[4])
local entry = '\\193' .. seq .. ':' .. ARGV[2]
local depth, max_groups, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local function drop(group)
  local key = ARGV[6] .. group
  for _, old in ipairs(redis.call('LRANGE', key, 0, -1)) do redis.call('DECRBY', KEYS[3], #old) end
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[2], group)
end
if #entry > max_bytes then
  drop(ARGV[7])
else
  redis.call('RPUSH', KEYS[1], entry)
  redis.call('INCRBY', KEYS[3], #entry)
  redis.call('ZADD', KEYS[2], seq, ARGV[7])
  while redis.call('LLEN', KEYS[1]) > depth do redis.call('DECRBY', KEYS[3], #redis.call('LPOP', KEYS[1])) end
  while redis.call('ZCARD', KEYS[2]) > max_groups or tonumber(redis.call('GET', KEYS[3])) > max_bytes do
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
    if not oldest then redis.call('SET', KEYS[3], 0) break end
    drop(oldest)
  end
end
return redis.call('PUBLISH', ARGV[1], entry)
"""

SCRIPTS = {"connection": _ROUTE_TO_CONNECTION, "user": _ROUTE_TO_USER, "live": _LIVE_FIELDS,
           "conn": _CONNECTION, "forget": _FORGET_NODE, "reserve": _RESERVE_SESSION, "move": _MOVE_SESSION,
           "serving": _OTHERS_SERVING, "lastvalue": _LAST_VALUE}
