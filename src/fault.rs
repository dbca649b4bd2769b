//! Two kinds of failure on the hot path, told apart by type (SQLSTATE class, broker error
//! kind, decode error), never by message text:
//!
//! - **transient**: a server down, a timeout, a connection lost. Retrying the same work
//!   later succeeds; the work is held (leases renewed) and retried.
//! - **permanent for one message**: a value the database refuses, a record the broker will
//!   never take. Retrying cannot help and holding would stall everything behind it; the
//!   batch is split ([`Bisection`]) until the one message is found, and that message alone
//!   becomes a dead letter.

use std::ops::Range;

/// Whether retrying the same work can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Retry later: the same request will succeed once the server is back.
    Transient,
    /// The request can never succeed with this content: isolate the message that carries it.
    Permanent,
}

/// An error that knows which kind of fault it is.
pub trait Classify {
    fn fault(&self) -> Fault;
}

/// SQLSTATE classes that a single row's values cause: data exceptions (`22`: a NUL in
/// jsonb, a number out of range, bad encoding), integrity constraint violations (`23`) and
/// program limits (`54`: a jsonb value too large). Anything else (connection, resources,
/// shutdown, serialization) is transient.
pub fn sqlstate_fault(code: &str) -> Fault {
    match code.get(..2) {
        Some("22" | "23" | "54") => Fault::Permanent,
        _ => Fault::Transient,
    }
}

/// A JetStream publish that can never succeed with this message: larger than the server's
/// `max_payload`, or than the stream's largest message. Timeouts, a missing stream, a
/// broken connection and the rest are transient.
pub fn publish_fault(error: &async_nats::jetstream::context::PublishError) -> Fault {
    use async_nats::jetstream::{ErrorCode, context::PublishErrorKind};
    match error.kind() {
        PublishErrorKind::MaxPayloadExceeded => Fault::Permanent,
        PublishErrorKind::Other => {
            let code = std::error::Error::source(error)
                .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>())
                .map(|api| api.error_code());
            match code {
                Some(
                    ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
                    | ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM,
                ) => Fault::Permanent,
                _ => Fault::Transient,
            }
        }
        _ => Fault::Transient,
    }
}

/// Whether a JetStream API call in `error`'s chain was refused as malformed (status 400: a
/// filter subject outside the stream, a bad configuration). The request was built by this
/// program, so retrying cannot help: a bug to report, never "try again".
pub fn refused_as_malformed(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(api) = error.downcast_ref::<async_nats::jetstream::Error>() {
            return api.code() == 400;
        }
        next = error.source();
    }
    false
}

/// A Redis error that retrying the same command cannot fix, as the client library itself
/// classifies it (`RetryMethod::NoRetry`: a script error, a wrong type, a refused command);
/// connection, timeout, loading and cluster-moving errors are transient.
pub fn redis_fault(error: &redis::RedisError) -> Fault {
    match error.retry_method() {
        redis::RetryMethod::NoRetry => Fault::Permanent,
        _ => Fault::Transient,
    }
}

/// Finds the members of a batch that fail on their own: the whole batch is tried first;
/// a range that fails permanently is split in halves, and a single member that still fails
/// is isolated. Ranges that succeed are never tried again, so work already committed is
/// not redone; a transient failure leaves the range to be tried again as it is.
#[derive(Debug, Clone)]
pub struct Bisection {
    /// Ranges still to try; the next one is the last.
    pending: Vec<Range<usize>>,
}

impl Bisection {
    /// A bisection over `len` members (nothing to do when `len` is 0).
    pub fn new(len: usize) -> Self {
        let mut pending = Vec::new();
        if len > 0 {
            pending.push(0..len);
        }
        Self { pending }
    }

    /// The range to try next, or `None` when every member succeeded or was isolated.
    pub fn next(&self) -> Option<Range<usize>> {
        self.pending.last().cloned()
    }

    /// The range returned by [`next`](Self::next) succeeded.
    pub fn succeeded(&mut self) {
        self.pending.pop();
    }

    /// The range returned by [`next`](Self::next) failed permanently. Returns the member
    /// it isolated when the range held one member; otherwise the range is split and both
    /// halves will be tried (the lower first).
    pub fn failed(&mut self) -> Option<usize> {
        let range = self.pending.pop()?;
        if range.len() == 1 {
            return Some(range.start);
        }
        let middle = range.start + range.len() / 2;
        self.pending.push(middle..range.end);
        self.pending.push(range.start..middle);
        None
    }
}

/// What [`isolate`] found: what each successful range gave, and every member refused for
/// good with its refusal.
#[derive(Debug)]
pub struct Isolated<T, E> {
    pub done: Vec<(Range<usize>, T)>,
    pub refused: Vec<(usize, E)>,
}

/// A batch write that can be tried a range at a time: what [`isolate`] drives. Its futures
/// are Send where its implementation's are (the trait is the fleet's own, used with
/// concrete types).
#[allow(async_fn_in_trait)]
pub trait RangeWrite {
    type Done;
    type Error: Classify;
    /// Writes the members in `range`.
    async fn try_range(&mut self, range: Range<usize>) -> Result<Self::Done, Self::Error>;
    /// Holds the batch through a transient `error`; false gives up (e.g. at shutdown).
    async fn wait(&mut self, error: Self::Error) -> bool;
}

/// The one bisection loop of the fleet's batch writes (claims, settles, the legacy mirror):
/// tries a batch of `len` members whole and splits every range refused for good until each
/// refusing member stands alone ([`Bisection`]); a transient failure is waited out and the
/// same range tried again.
///
/// Returns `None` when the writer gave up waiting.
pub async fn isolate<W: RangeWrite>(
    writer: &mut W,
    len: usize,
) -> Option<Isolated<W::Done, W::Error>> {
    let mut found = Isolated {
        done: Vec::new(),
        refused: Vec::new(),
    };
    let mut bisection = Bisection::new(len);
    while let Some(range) = bisection.next() {
        match writer.try_range(range.clone()).await {
            Ok(done) => {
                bisection.succeeded();
                found.done.push((range, done));
            }
            Err(error) if error.fault() == Fault::Permanent => {
                if let Some(member) = bisection.failed() {
                    found.refused.push((member, error));
                }
            }
            Err(error) => {
                if !writer.wait(error).await {
                    return None;
                }
            }
        }
    }
    Some(found)
}

impl Classify for redis::RedisError {
    fn fault(&self) -> Fault {
        redis_fault(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a bisection where the members in `bad` fail any range that holds them.
    fn isolate(len: usize, bad: &[usize]) -> (Vec<usize>, Vec<Range<usize>>, usize) {
        let mut bisection = Bisection::new(len);
        let (mut isolated, mut committed, mut tries) = (Vec::new(), Vec::new(), 0);
        while let Some(range) = bisection.next() {
            tries += 1;
            if bad.iter().any(|b| range.contains(b)) {
                isolated.extend(bisection.failed());
            } else {
                committed.push(range);
                bisection.succeeded();
            }
        }
        (isolated, committed, tries)
    }

    #[test]
    fn a_clean_batch_is_one_try() {
        let (isolated, committed, tries) = isolate(256, &[]);
        assert!(isolated.is_empty());
        assert_eq!(committed, vec![0..256]);
        assert_eq!(tries, 1);
        assert_eq!(Bisection::new(0).next(), None);
    }

    #[test]
    fn one_bad_member_costs_two_tries_per_halving() {
        let (isolated, committed, tries) = isolate(256, &[77]);
        assert_eq!(isolated, vec![77]);
        let covered: usize = committed.iter().map(|r| r.len()).sum();
        assert_eq!(covered, 255, "every other member committed exactly once");
        assert!(committed.iter().all(|r| !r.contains(&77)));
        assert_eq!(tries, 1 + 2 * 8);
    }

    #[test]
    fn every_bad_member_is_found_and_no_good_one_twice() {
        for bad in [
            vec![0],
            vec![9],
            vec![0, 9],
            vec![3, 4, 5],
            (0..10).collect(),
        ] {
            let (mut isolated, committed, _) = isolate(10, &bad);
            isolated.sort();
            assert_eq!(isolated, bad);
            let mut seen: Vec<usize> = committed.into_iter().flatten().collect();
            seen.sort();
            let good: Vec<usize> = (0..10).filter(|i| !bad.contains(i)).collect();
            assert_eq!(seen, good);
        }
    }

    #[test]
    fn a_single_member_fails_alone() {
        let mut bisection = Bisection::new(1);
        assert_eq!(bisection.next(), Some(0..1));
        assert_eq!(bisection.failed(), Some(0));
        assert_eq!(bisection.next(), None);
        assert_eq!(bisection.failed(), None);
    }

    #[test]
    fn lower_half_first() {
        let mut bisection = Bisection::new(5);
        assert_eq!(bisection.failed(), None);
        assert_eq!(bisection.next(), Some(0..2));
        bisection.succeeded();
        assert_eq!(bisection.next(), Some(2..5));
    }

    #[test]
    fn redis_errors_by_the_clients_own_classes() {
        use redis::{ErrorKind, RedisError, ServerErrorKind};
        let permanent: [RedisError; 3] = [
            (
                ErrorKind::Server(ServerErrorKind::ResponseError),
                "WRONGTYPE",
            )
                .into(),
            (ErrorKind::Server(ServerErrorKind::NoScript), "NOSCRIPT").into(),
            (ErrorKind::UnexpectedReturnType, "not a string").into(),
        ];
        for error in &permanent {
            assert_eq!(redis_fault(error), Fault::Permanent, "{error}");
        }
        let transient: [RedisError; 4] = [
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
            (ErrorKind::Server(ServerErrorKind::TryAgain), "TRYAGAIN").into(),
            (ErrorKind::Server(ServerErrorKind::BusyLoading), "LOADING").into(),
            (ErrorKind::Server(ServerErrorKind::ReadOnly), "READONLY").into(),
        ];
        for error in &transient {
            assert_eq!(redis_fault(error), Fault::Transient, "{error}");
        }
    }

    #[test]
    fn publish_errors_by_kind_and_server_code() {
        use async_nats::jetstream::{self, context::PublishError, context::PublishErrorKind};
        let api = |code: u64| -> jetstream::Error {
            serde_json::from_value(serde_json::json!({
                "code": 400, "err_code": code, "description": "refused"
            }))
            .unwrap()
        };
        let too_large = PublishError::new(PublishErrorKind::MaxPayloadExceeded);
        assert_eq!(publish_fault(&too_large), Fault::Permanent);
        for code in [10054, 10097] {
            let refused = PublishError::with_source(PublishErrorKind::Other, api(code));
            assert_eq!(publish_fault(&refused), Fault::Permanent, "{code}");
        }
        // Store failed, an account limit, or no server code at all: try again later.
        for code in [10077, 10002] {
            let busy = PublishError::with_source(PublishErrorKind::Other, api(code));
            assert_eq!(publish_fault(&busy), Fault::Transient, "{code}");
        }
        for kind in [
            PublishErrorKind::Other,
            PublishErrorKind::TimedOut,
            PublishErrorKind::StreamNotFound,
            PublishErrorKind::BrokenPipe,
            PublishErrorKind::MaxAckPending,
        ] {
            assert_eq!(publish_fault(&PublishError::new(kind)), Fault::Transient);
        }
    }

    #[test]
    fn a_request_refused_as_malformed_is_told_apart_through_the_chain() {
        use async_nats::jetstream::{self, stream::ConsumerError, stream::ConsumerErrorKind};
        let api = |status: u64, code: u64| -> jetstream::Error {
            serde_json::from_value(serde_json::json!({
                "code": status, "err_code": code, "description": "refused"
            }))
            .unwrap()
        };
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read: {source}")]
        struct Ours {
            source: Box<dyn std::error::Error + Send + Sync>,
        }
        let wrapped = |error: jetstream::Error| Ours {
            source: Box::new(ConsumerError::with_source(
                ConsumerErrorKind::JetStream(error.clone()),
                error,
            )),
        };
        // A filter subject outside the stream (10093): ours to fix.
        assert!(refused_as_malformed(&wrapped(api(400, 10093))));
        assert!(refused_as_malformed(&api(400, 10093)));
        // JetStream away, or a stream missing: another day may differ.
        assert!(!refused_as_malformed(&wrapped(api(503, 10008))));
        assert!(!refused_as_malformed(&wrapped(api(404, 10059))));
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!refused_as_malformed(&io));
    }

    #[derive(Debug, PartialEq)]
    struct Refusal(Fault);
    impl Classify for Refusal {
        fn fault(&self) -> Fault {
            self.0
        }
    }

    /// Members in `bad` are refused for good; the first `transient` tries fail transiently.
    struct Scripted {
        bad: Vec<usize>,
        transient: usize,
        tries: Vec<Range<usize>>,
        give_up: bool,
    }

    impl RangeWrite for Scripted {
        type Done = usize;
        type Error = Refusal;
        async fn try_range(&mut self, range: Range<usize>) -> Result<usize, Refusal> {
            self.tries.push(range.clone());
            if self.tries.len() <= self.transient {
                return Err(Refusal(Fault::Transient));
            }
            if self.bad.iter().any(|b| range.contains(b)) {
                return Err(Refusal(Fault::Permanent));
            }
            Ok(range.len())
        }
        async fn wait(&mut self, _: Refusal) -> bool {
            !self.give_up
        }
    }

    #[tokio::test]
    async fn isolate_splits_refusals_down_and_waits_out_transient_faults() {
        let mut writer = Scripted {
            bad: vec![2, 5],
            transient: 1,
            tries: Vec::new(),
            give_up: false,
        };
        let found = super::isolate(&mut writer, 8).await.unwrap();
        let refused: Vec<usize> = found.refused.iter().map(|(i, _)| *i).collect();
        assert_eq!(refused, [2, 5]);
        assert_eq!(found.done.iter().map(|(_, n)| n).sum::<usize>(), 6);
        assert_eq!(
            writer.tries[..2],
            [0..8, 0..8],
            "the same range after the wait"
        );
        let mut quitter = Scripted {
            bad: vec![],
            transient: 9,
            tries: Vec::new(),
            give_up: true,
        };
        assert!(super::isolate(&mut quitter, 4).await.is_none());
    }

    #[test]
    fn sqlstate_classes() {
        for permanent in ["22P05", "22003", "22021", "23505", "54000"] {
            assert_eq!(sqlstate_fault(permanent), Fault::Permanent, "{permanent}");
        }
        for transient in [
            "08006", "57P01", "53300", "40001", "42P01", "XX000", "2", "",
        ] {
            assert_eq!(sqlstate_fault(transient), Fault::Transient, "{transient}");
        }
    }
}
