//! Moves the mirror writer holds back for a moment: a `waiting` or `processing` move younger
//! than the hold is likely to be replaced by its task's next move, and then only that one is
//! written. Each move offered is matched against the held ones by task id in O(1): under a
//! backlog thousands are held at once, and going over all of them for every new move made
//! the writer the busiest thing in a worker.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};

use super::{MirrorEvent, event::Place};

pub(super) struct HeldMoves {
    hold: chrono::Duration,
    /// The newest move of each held task, with the number it was held under.
    by_id: HashMap<String, (u64, MirrorEvent)>,
    /// Held moves oldest first, by that number; a task's entry whose number no longer
    /// matches `by_id` was replaced, and is skipped.
    order: VecDeque<(u64, String)>,
    next: u64,
    bytes: usize,
}

impl HeldMoves {
    pub(super) fn new(hold: std::time::Duration) -> Self {
        Self {
            hold: chrono::Duration::from_std(hold).expect("a short hold"),
            by_id: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            bytes: 0,
        }
    }

    /// Bytes of task JSON held.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes a move in: held when `may_hold` and it is a move a later one usually replaces,
    /// else put in `due`. A held move of the same task is dropped when this one is at least
    /// as new, and this one is dropped when the held one is newer. Returns how many moves
    /// were dropped (0 or 1).
    pub(super) fn offer(
        &mut self,
        event: MirrorEvent,
        may_hold: bool,
        due: &mut Vec<MirrorEvent>,
    ) -> u64 {
        let mut dropped = 0;
        if let Some((_, held)) = self.by_id.get(&event.id) {
            if held.rank > event.rank {
                return 1;
            }
            let (_, replaced) = self.by_id.remove(&event.id).expect("just found");
            self.bytes -= replaced.json.len();
            dropped = 1;
        }
        if may_hold && matches!(event.place, Place::Waiting | Place::Processing) {
            let number = self.next;
            self.next += 1;
            self.bytes += event.json.len();
            self.order.push_back((number, event.id.clone()));
            self.by_id.insert(event.id.clone(), (number, event));
        } else {
            due.push(event);
        }
        dropped
    }

    /// When the oldest held move falls due, if any is held.
    pub(super) fn next_due(&mut self) -> Option<DateTime<Utc>> {
        self.skip_replaced();
        let (_, id) = self.order.front()?;
        Some(self.by_id[id].1.at + self.hold)
    }

    /// Releases the moves held for the whole hold by `now`, or every one when `all`.
    pub(super) fn take_due(&mut self, now: DateTime<Utc>, all: bool) -> Vec<MirrorEvent> {
        let mut due = Vec::new();
        loop {
            self.skip_replaced();
            let Some((_, id)) = self.order.front() else {
                break;
            };
            if !all && now - self.by_id[id].1.at < self.hold {
                break;
            }
            let (_, id) = self.order.pop_front().expect("just seen");
            let (_, event) = self.by_id.remove(&id).expect("not replaced");
            self.bytes -= event.json.len();
            due.push(event);
        }
        due
    }

    fn skip_replaced(&mut self) {
        while let Some((number, id)) = self.order.front() {
            match self.by_id.get(id) {
                Some((held, _)) if held == number => return,
                _ => {
                    self.order.pop_front();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    use crate::mirror::event::test_move as event;

    #[test]
    fn a_move_replaced_within_the_hold_is_never_written() {
        let start = Utc::now();
        let mut held = HeldMoves::new(Duration::from_millis(50));
        let mut due = Vec::new();
        assert_eq!(
            held.offer(event("a", Place::Waiting, 2, start), true, &mut due),
            0
        );
        assert_eq!(
            held.offer(event("b", Place::Waiting, 2, start), true, &mut due),
            0
        );
        assert_eq!(
            held.offer(event("a", Place::Processing, 3, start), true, &mut due),
            1
        );
        assert_eq!(
            held.offer(
                event("a", Place::Completed, u64::MAX, start),
                true,
                &mut due
            ),
            1
        );
        assert_eq!(
            due.iter().map(|e| e.rank).collect::<Vec<_>>(),
            vec![u64::MAX]
        );
        // Only b is held now, and it falls due after the hold.
        assert_eq!(held.bytes(), "b:2".len());
        let ms = chrono::Duration::milliseconds;
        assert_eq!(held.next_due(), Some(start + ms(50)));
        assert!(held.take_due(start + ms(49), false).is_empty());
        let released = held.take_due(start + ms(50), false);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].id, "b");
        assert_eq!((held.bytes(), held.next_due()), (0, None));
    }

    #[test]
    fn an_older_move_arriving_late_is_dropped_and_final_moves_are_never_held() {
        let now = Utc::now();
        let mut held = HeldMoves::new(Duration::from_millis(50));
        let mut due = Vec::new();
        held.offer(event("a", Place::Processing, 3, now), true, &mut due);
        assert_eq!(
            held.offer(event("a", Place::Waiting, 2, now), true, &mut due),
            1
        );
        held.offer(event("f", Place::Failed, u64::MAX, now), true, &mut due);
        held.offer(event("s", Place::Scheduled, 1, now), true, &mut due);
        assert_eq!(
            due.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["f", "s"]
        );
        // Not holding (the writer is closing): released at once, and so is what was held.
        held.offer(event("w", Place::Waiting, 2, now), false, &mut due);
        assert_eq!(due.len(), 3);
        let rest = held.take_due(now, true);
        assert_eq!((rest.len(), rest[0].rank), (1, 3));
    }

    #[test]
    fn a_replaced_move_keeps_its_place_out_of_the_order() {
        let start = Utc::now();
        let ms = chrono::Duration::milliseconds;
        let mut held = HeldMoves::new(Duration::from_millis(50));
        let mut due = Vec::new();
        held.offer(event("a", Place::Waiting, 2, start), true, &mut due);
        held.offer(
            event("b", Place::Waiting, 2, start + ms(10)),
            true,
            &mut due,
        );
        held.offer(
            event("a", Place::Processing, 3, start + ms(20)),
            true,
            &mut due,
        );
        // b is the oldest now; a is held from its newer move.
        assert_eq!(held.next_due(), Some(start + ms(60)));
        let released = held.take_due(start + ms(65), false);
        assert_eq!(
            released.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(held.next_due(), Some(start + ms(70)));
    }
}
