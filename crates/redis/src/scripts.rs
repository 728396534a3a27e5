//! The Lua scripts the broker runs. Redis runs a script atomically, which is what keeps a
//! channel's offset, history stream and pub/sub message in step on every node.

/// Assigns the next offset (creating the epoch, and clearing stale history, when the channel has
/// none), splices it into the event, appends to history and PUBLISHes. Returns offset, epoch and
/// the number of nodes that received it.
pub(crate) const PUBLISH: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  -- A new epoch: history of a lost one must not linger (its ids would block XADD).
  epoch = ARGV[4]; redis.call('HSET', KEYS[1], 'e', epoch); redis.call('DEL', KEYS[2])
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
local payload = ARGV[1]
if ARGV[3] == '1' then payload = payload .. offset end
payload = payload .. ARGV[2]
local size = tonumber(ARGV[5])
if size > 0 then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('XADD', KEYS[2], 'MAXLEN', size, offset .. '-0', 't', ms, 'p', payload)
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
else
  redis.call('PEXPIRE', KEYS[1], 86400000)
end
local nodes = redis.call('PUBLISH', ARGV[7], epoch .. '\n' .. offset .. '\n' .. payload)
return {offset, epoch, nodes}
"#;

/// The channel's epoch and offset (creating the epoch if needed) and Redis's clock in ms.
pub(crate) const POSITION: &str = r#"
if redis.call('HSETNX', KEYS[1], 'e', ARGV[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], 86400000)
  redis.call('DEL', KEYS[2])
end
local p = redis.call('HMGET', KEYS[1], 'e', 'o')
local now = redis.call('TIME')
return {p[1], p[2] or '0', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)}
"#;

/// Moves an ack cursor forward (never back within an epoch).
pub(crate) const SET_CURSOR: &str = r#"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local sep = string.find(old, ' ', 1, true)
  if string.sub(old, 1, sep - 1) == ARGV[2] and tonumber(string.sub(old, sep + 1)) >= tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
return 1
"#;
