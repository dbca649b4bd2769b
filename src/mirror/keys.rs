//! Key names: the seed's four, plus the fleet's own bookkeeping beside them.

/// The Redis keys of one fleet's legacy contract.
#[derive(Debug, Clone)]
pub struct LegacyKeys {
    /// Sorted set: member = task JSON, score = priority (waiting tasks).
    pub agent_tasks: String,
    /// Sorted set: member = task JSON, score = when it is due (Unix seconds): delayed tasks
    /// not due yet. Not one of the seed's keys — `agent_tasks` scores by priority, and a
    /// legacy consumer popping it would run a delayed task early — but the shape tools such
    /// as Sidekiq's `schedule` set use.
    pub scheduled_tasks: String,
    /// Hash: id -> task JSON (being processed).
    pub processing_tasks: String,
    /// Hash: id -> task JSON with `result`.
    pub completed_tasks: String,
    /// Hash: id -> task JSON with `last_error` (given up).
    pub failed_tasks: String,
    /// Hash: id -> the member the fleet wrote to `agent_tasks` (or `scheduled_tasks`) for it. Tells our members
    /// from a legacy producer's, and lets a task's member be moved without a scan.
    pub mirrored_waiting: String,
    /// Hash: id -> rank of the newest state written, so a late write never moves a task
    /// back.
    pub mirror_state: String,
    /// Hash: member -> time taken, for legacy tasks claimed but not yet published.
    pub intake: String,
    /// String with an expiry: held by the worker trimming finished entries this hour.
    pub upkeep_lease: String,
    /// Whether the fleet's waiting tasks are shown in `agent_tasks` (and legacy producers'
    /// members claimed in place). False when legacy consumers pop `agent_tasks` beside the
    /// fleet: anything shown there could be run twice.
    pub show_waiting: bool,
}

impl LegacyKeys {
    pub fn new(prefix: &str) -> Self {
        Self {
            agent_tasks: format!("{prefix}agent_tasks"),
            scheduled_tasks: format!("{prefix}scheduled_tasks"),
            processing_tasks: format!("{prefix}processing_tasks"),
            completed_tasks: format!("{prefix}completed_tasks"),
            failed_tasks: format!("{prefix}failed_tasks"),
            mirrored_waiting: format!("{prefix}swarm:mirror:waiting"),
            mirror_state: format!("{prefix}swarm:mirror:state"),
            intake: format!("{prefix}swarm:intake"),
            upkeep_lease: format!("{prefix}swarm:upkeep"),
            show_waiting: true,
        }
    }

    /// The keys of `settings`, shown as they ask.
    pub fn of(settings: &crate::config::RedisSettings) -> Self {
        Self {
            show_waiting: !settings.legacy_consumers,
            ..Self::new(&settings.key_prefix)
        }
    }

    /// Every key, for tests and `mirror rebuild`.
    pub fn all(&self) -> [&str; 9] {
        [
            &self.agent_tasks,
            &self.scheduled_tasks,
            &self.processing_tasks,
            &self.completed_tasks,
            &self.failed_tasks,
            &self.mirrored_waiting,
            &self.mirror_state,
            &self.intake,
            &self.upkeep_lease,
        ]
    }
}
