//! The one growing pause of the fleet's retry loops (start-up steps, batches held through a
//! transient fault, the legacy mirror's writes): it doubles after each failed try up to a
//! ceiling, and starts over after a success. Task retries have their own policy
//! (`worker::retry`: configured base, factor and jitter).

use std::{future::Future, time::Duration};

/// How long start-up keeps retrying a step that failed: a cluster electing leaders, or busy
/// starting many workers at once, answers late rather than never.
pub const START_UP_PATIENCE: Duration = Duration::from_secs(60);

/// Runs one start-up step of `what`, retrying failures with a growing pause for
/// [`START_UP_PATIENCE`]; fails with the last error after that.
pub async fn start_up<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    mut step: impl FnMut() -> F,
) -> Result<T, E> {
    let started = tokio::time::Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        match step().await {
            Ok(done) => return Ok(done),
            Err(error) if started.elapsed() + backoff.peek() < START_UP_PATIENCE => {
                let pause = backoff.next_pause();
                tracing::warn!(%error, "cannot set up {what} yet; retrying in {pause:?}");
                tokio::time::sleep(pause).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// A doubling pause between tries.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    longest: Duration,
    next: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, longest: Duration) -> Self {
        Self {
            first,
            longest,
            next: first,
        }
    }

    /// The pause before the next try; the one after it is twice as long, up to the ceiling.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.longest);
        pause
    }

    /// Sleeps the next pause.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_pause()).await;
    }

    /// The last try succeeded: the next failure starts from the first pause again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The pause the next failure would wait.
    pub fn peek(&self) -> Duration {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_to_the_ceiling_and_start_over_after_a_success() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let pauses: Vec<u128> = (0..5).map(|_| backoff.next_pause().as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 500, 500]);
        backoff.reset();
        assert_eq!(backoff.next_pause(), Duration::from_millis(100));
        assert_eq!(backoff.peek(), Duration::from_millis(200));
    }
}
