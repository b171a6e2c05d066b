//! Lua scripts that make an append one atomic round trip.
//!
//! Scripts run atomically in Redis, so "assign seq, append to the stream, keep in
//! the recent window, remember the idempotency key, publish" either all happen
//! or none do, and two gateways can never interleave inside one chat. Publishing
//! from inside the script also makes live delivery order equal `seq` order.
//! Every key and channel a script touches shares the chat's shard hash tag
//! ([`super::keys`]), so on a Redis Cluster the script runs on one slot and
//! publishes with `SPUBLISH` (the publish command is an argument).

use redis::Script;
use std::sync::LazyLock;

/// `append_message`:
/// KEYS: seq, recent, client_msg, stream.
/// ARGV: message JSON after the seq digits, floor seq ('' = none), recent window
/// size, idempotency TTL seconds, channel 1, channel 2, envelope prefix,
/// publish command (`PUBLISH` or `SPUBLISH`).
/// Returns `{1, json}` when stored, `{0, json}` for a duplicate, or the error `NOSEQ`.
pub static APPEND_MESSAGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local dup = redis.call('GET', KEYS[3])
if dup then return {0, dup} end
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[2] == '' then return redis.error_reply('NOSEQ') end
  redis.call('SET', KEYS[1], ARGV[2])
end
local seq = redis.call('INCR', KEYS[1])
local msg = '{"seq":' .. seq .. ARGV[1]
redis.call('XADD', KEYS[4], '*', 't', 'm', 'd', msg)
redis.call('ZADD', KEYS[2], seq, msg)
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[3]) + 1))
redis.call('SET', KEYS[3], msg, 'EX', ARGV[4])
local frame = ARGV[7] .. '{"type":"message","message":' .. msg .. '}'
redis.call(ARGV[8], ARGV[5], frame)
redis.call(ARGV[8], ARGV[6], frame)
return {1, msg}
"#,
    )
});

/// `append_read`:
/// KEYS: seq, stream. ARGV: chat id, reader id, requested mark, floor seq ('' = none),
/// peer channel, frame head (envelope prefix + JSON up to the mark's digits),
/// publish command.
/// Returns the mark clamped to the chat's current `seq`, or the error `NOSEQ`.
pub static APPEND_READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[4] == '' then return redis.error_reply('NOSEQ') end
  redis.call('SET', KEYS[1], ARGV[4])
end
local cur = tonumber(redis.call('GET', KEYS[1]))
local up = tonumber(ARGV[3])
if up > cur then up = cur end
if up <= 0 then return 0 end
redis.call('XADD', KEYS[2], '*', 't', 'r', 'c', ARGV[1], 'u', ARGV[2], 's', up)
redis.call(ARGV[7], ARGV[5], ARGV[6] .. up .. '}')
return up
"#,
    )
});
