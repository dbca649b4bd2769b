//! Subject names, derived from one configurable prefix so several fleets share a server.

use crate::task::{MAX_PRIORITY, valid_agent_type};

/// The subjects of one fleet: `<prefix>.tasks.p<N>.<agent_type>`.
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where a task of this priority and agent type is published.
    pub fn task(&self, priority: u8, agent_type: &str) -> String {
        format!("{}.tasks.p{priority}.{agent_type}", self.prefix)
    }

    /// Every task subject: the idle doorbell's and the counts' filter.
    pub fn all_tasks(&self) -> String {
        format!("{}.tasks.>", self.prefix)
    }

    /// What the tasks stream takes: exactly two tokens after `tasks`, so a subject with
    /// extra tokens is refused at publish rather than stored where no lane reads it.
    pub fn stream_subject(&self) -> String {
        format!("{}.tasks.*.*", self.prefix)
    }

    /// Every priority of one agent type: a dedicated pool's doorbell.
    pub fn any_priority(&self, agent_type: &str) -> String {
        format!("{}.tasks.*.{agent_type}", self.prefix)
    }

    /// Where the tasks stream republishes each task it stored (core NATS, same tokens after
    /// the prefix): what the legacy mirror listens to, so it shows only accepted tasks.
    pub fn stored_tasks(&self) -> String {
        format!("{}.stored.>", self.prefix)
    }

    /// Every agent type of one priority (the per-priority consumers of earlier versions).
    pub fn priority_filter(&self, priority: u8) -> String {
        format!("{}.tasks.p{priority}.*", self.prefix)
    }

    /// Where cancellations are announced to every worker (core NATS).
    pub fn cancellations(&self) -> String {
        format!("{}.cancel", self.prefix)
    }

    /// Where workers tell live viewers what they did (`settled`, `progress`; core NATS).
    pub fn worker_event(&self, kind: &str) -> String {
        format!("{}.events.{kind}", self.prefix)
    }

    /// Every worker event.
    pub fn worker_events(&self) -> String {
        format!("{}.events.*", self.prefix)
    }

    /// Where workers answer roll calls.
    pub fn roll_call(&self) -> String {
        format!("{}.workers.roll", self.prefix)
    }

    /// Where a task's outcome is announced once committed (core NATS, not stored).
    pub fn result(&self, id: &uuid::Uuid) -> String {
        format!("{}.results.{id}", self.prefix)
    }

    /// Where a task of this priority and agent type waits until it is due.
    pub fn delayed(&self, priority: u8, agent_type: &str) -> String {
        format!("{}.delayed.p{priority}.{agent_type}", self.prefix)
    }

    /// Where a delayed task is held by the server's message schedules (one subject per
    /// task: a subject holds one schedule).
    pub fn held(&self, id: &uuid::Uuid) -> String {
        format!("{}.held.{id}", self.prefix)
    }

    /// What the tasks stream takes for held tasks.
    pub fn held_stream_subject(&self) -> String {
        format!("{}.held.*", self.prefix)
    }

    /// Every subject of the fleet: what a stream that takes schedules republishes, so the
    /// copies read `<prefix>.stored.tasks.…` and `<prefix>.stored.held.…`.
    pub fn everything(&self) -> String {
        format!("{}.>", self.prefix)
    }

    /// The subject a republished copy was published on, from the copy's own subject
    /// (`<prefix>.stored.tasks.p1.a` → `<prefix>.tasks.p1.a`).
    pub fn unstored<'a>(&self, subject: &'a str) -> std::borrow::Cow<'a, str> {
        match subject
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix(".stored."))
        {
            Some(rest) => format!("{}.{rest}", self.prefix).into(),
            None => subject.into(),
        }
    }

    /// Where a stream that takes schedules republishes what is stored under `subject`.
    pub fn stored_copy_of(&self, subject: &str) -> String {
        match subject.strip_prefix(self.prefix.as_str()) {
            Some(rest) => format!("{}.stored{rest}", self.prefix),
            None => subject.to_string(),
        }
    }

    /// Whether `subject` holds a delayed task (the server's schedule or the delay stream).
    pub fn is_delayed(&self, subject: &str) -> bool {
        subject
            .strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.starts_with(".held.") || rest.starts_with(".delayed."))
    }

    /// Where the server publishes a schedule's alarm when it is due (see
    /// `schedule::alarm`).
    pub fn alarms_due(&self) -> String {
        format!("{}.alarms.due", self.prefix)
    }

    /// What the tasks stream takes for schedule alarms.
    pub fn alarms_stream_subject(&self) -> String {
        format!("{}.alarms.>", self.prefix)
    }

    /// What the delay stream takes.
    pub fn delayed_stream_subject(&self) -> String {
        format!("{}.delayed.*.*", self.prefix)
    }

    /// The task subject a delayed subject's task goes to when due.
    pub fn task_subject_of_delayed(&self, delayed: &str) -> String {
        let rest = delayed
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix(".delayed."))
            .unwrap_or(delayed);
        format!("{}.tasks.{rest}", self.prefix)
    }

    /// Every task's outcome announcements.
    pub fn all_results(&self) -> String {
        format!("{}.results.*", self.prefix)
    }

    /// Where the dead letter of a task of this agent type goes.
    pub fn dead_letter(&self, agent_type: &str) -> String {
        format!("{}.dlq.{agent_type}", self.prefix)
    }

    /// Every dead-letter subject.
    pub fn all_dead_letters(&self) -> String {
        format!("{}.dlq.>", self.prefix)
    }

    /// Priority and agent type named by a task subject, if it is one of ours.
    pub fn parse_task<'a>(&self, subject: &'a str) -> Option<(u8, &'a str)> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".tasks.p")?;
        let (priority, agent_type) = rest.split_once('.')?;
        // Exactly one digit: `p05` would parse as 5 yet no lane's filter matches it.
        let [digit] = priority.as_bytes() else {
            return None;
        };
        let priority = digit.is_ascii_digit().then(|| digit - b'0')?;
        (priority <= MAX_PRIORITY && valid_agent_type(agent_type)).then_some((priority, agent_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_subjects_round_trip() {
        let subjects = Subjects::new("acme.swarm");
        let subject = subjects.task(7, "email");
        assert_eq!(subject, "acme.swarm.tasks.p7.email");
        assert_eq!(subjects.parse_task(&subject), Some((7, "email")));
        assert_eq!(subjects.parse_task("acme.swarm.tasks.p12.email"), None);
        assert_eq!(subjects.parse_task("other.tasks.p1.email"), None);
        for stray in [
            "acme.swarm.tasks.p05.email",
            "acme.swarm.tasks.p5.email.extra",
            "acme.swarm.tasks.px.email",
            "acme.swarm.tasks.p.email",
            "acme.swarm.tasks.5.email",
            "acme.swarm.tasks.p5.",
            "acme.swarm.tasks.p5.é",
            "acme.swarm.tasks.p5",
        ] {
            assert_eq!(subjects.parse_task(stray), None, "{stray}");
        }
        assert_eq!(
            subjects.parse_task("acme.swarm.tasks.p0.a-b_9"),
            Some((0, "a-b_9"))
        );
        assert_eq!(subjects.parse_task("acme.swarm.tasks.p9.x"), Some((9, "x")));
        assert_eq!(subjects.stream_subject(), "acme.swarm.tasks.*.*");
        assert_eq!(subjects.priority_filter(0), "acme.swarm.tasks.p0.*");
        let id = uuid::Uuid::nil();
        assert_eq!(
            subjects.held(&id),
            "acme.swarm.held.00000000-0000-0000-0000-000000000000"
        );
        assert!(subjects.is_delayed(&subjects.held(&id)));
        assert!(subjects.is_delayed(&subjects.delayed(1, "a")));
        assert!(!subjects.is_delayed(&subject));
        let stored = subjects.stored_copy_of(&subject);
        assert_eq!(stored, "acme.swarm.stored.tasks.p7.email");
        assert_eq!(subjects.unstored(&stored), subject);
        assert_eq!(subjects.unstored(&subject), subject);
    }
}
