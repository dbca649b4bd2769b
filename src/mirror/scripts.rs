//! The Lua scripts that make each legacy-key move atomic.

use std::sync::LazyLock;

/// Moves tasks to their new places in the legacy keys, each unless a newer state of it was
/// written. One call carries many moves: a script call per move cost Redis more than the
/// moves themselves. A move that fails leaves the earlier ones of its call written; moves are
/// monotonic (a repeated one is refused by its rank), so writing the call again is safe.
///
/// KEYS: agent_tasks, processing_tasks, completed_tasks, failed_tasks, mirrored_waiting,
/// mirror_state, scheduled_tasks. ARGV: force ("1" ignores rank and finality: rebuilds), then
/// for each move id, kind (scheduled | waiting | hidden: waiting but not shown | processing |
/// completed | failed), rank, json, score.
pub static TRANSITION: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(TRANSITION_CODE));

/// The source of [`TRANSITION`], for `SCRIPT LOAD` after Redis lost its script cache.
pub const TRANSITION_CODE: &str = r#"
local force = ARGV[1] == '1'
local moved = 0
for i = 2, #ARGV, 5 do
  local id, kind, rank, json, score = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[i + 4]
  local skip = false
  if not force then
    if redis.call('HEXISTS', KEYS[3], id) == 1 or redis.call('HEXISTS', KEYS[4], id) == 1 then
      skip = true
    else
      local current = redis.call('HGET', KEYS[6], id)
      skip = current and tonumber(current) >= rank
    end
  else
    redis.call('HDEL', KEYS[3], id)
    redis.call('HDEL', KEYS[4], id)
  end
  if not skip then
    local old = redis.call('HGET', KEYS[5], id)
    if old then
      redis.call('ZREM', KEYS[1], old)
      redis.call('ZREM', KEYS[7], old)
      redis.call('HDEL', KEYS[5], id)
    end
    redis.call('HDEL', KEYS[2], id)
    if kind == 'scheduled' then
      redis.call('ZADD', KEYS[7], score, json)
      redis.call('HSET', KEYS[5], id, json)
      redis.call('HSET', KEYS[6], id, rank)
    elseif kind == 'waiting' then
      redis.call('ZADD', KEYS[1], score, json)
      redis.call('HSET', KEYS[5], id, json)
      redis.call('HSET', KEYS[6], id, rank)
    elseif kind == 'hidden' then
      redis.call('HSET', KEYS[6], id, rank)
    elseif kind == 'processing' then
      redis.call('HSET', KEYS[2], id, json)
      redis.call('HSET', KEYS[6], id, rank)
    elseif kind == 'completed' then
      redis.call('HSET', KEYS[3], id, json)
      redis.call('HDEL', KEYS[6], id)
    else
      redis.call('HSET', KEYS[4], id, json)
      redis.call('HDEL', KEYS[6], id)
    end
    moved = moved + 1
  end
end
return moved
"#;

/// Claims legacy producers' members of `agent_tasks` atomically: each given member that is
/// still there and was not written by the fleet is recorded in the intake hash. A member
/// with a task id stays where it is, now marked the fleet's own waiting copy of its task
/// (`mirrored_waiting`, state rank 2 = waiting for delivery 1): the seed's tools see it
/// waiting without a gap, and the fleet's later moves take it from there; one without an id
/// (about to be dead-lettered) is removed. Each member comes with its id as read by the
/// caller (empty when it has none or it is not in canonical UUID form), so the script never
/// decodes JSON: a member is the fleet's when `mirrored_waiting` maps its id to exactly this
/// member.
///
/// KEYS: agent_tasks, mirrored_waiting, intake, mirror_state. ARGV: now (ms), in place
/// ("1", else every claimed member is removed: legacy consumers pop `agent_tasks`), then
/// member, id pairs. Returns the claimed members' pairs, as given.
pub static CLAIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local taken = {}
local in_place = ARGV[2] == '1'
for i = 3, #ARGV, 2 do
  local member, id = ARGV[i], ARGV[i + 1]
  if redis.call('ZSCORE', KEYS[1], member) then
    local ours = id ~= '' and redis.call('HGET', KEYS[2], id) == member
    if not ours then
      if in_place and id ~= '' then
        redis.call('HSET', KEYS[2], id, member)
        local current = redis.call('HGET', KEYS[4], id)
        if not current or tonumber(current) < 2 then
          redis.call('HSET', KEYS[4], id, 2)
        end
      else
        redis.call('ZREM', KEYS[1], member)
      end
      redis.call('HSET', KEYS[3], member, ARGV[1])
      taken[#taken + 1] = member
      taken[#taken + 1] = id
    end
  end
end
return taken
"#,
    )
});
