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

SCRIPTS = {"connection": _ROUTE_TO_CONNECTION, "user": _ROUTE_TO_USER, "live": _LIVE_FIELDS,
           "conn": _CONNECTION, "forget": _FORGET_NODE}
