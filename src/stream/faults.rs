//! A decorator that injects errors and latency into any [`StreamApi`] — the
//! simulator or the real client — by rule, so consumer tests can exercise
//! 5xx bursts, throttling storms, expired iterators, slow calls, panics and
//! malformed records without the backend knowing.
//!
//! A fault happens *instead of* the call: an injected error (or panic) never
//! reaches the wrapped service, and injected latency is spent (on tokio's
//! clock) before the call is made. Malformed records are the exception: they
//! are the wrapped service's records, rewritten on the way out.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{
    DescribeStreamRequest, RecordsPage, ShardIteratorRequest, StreamApi, StreamDescription,
    StreamError, StreamResult, StreamSummary, TableStream, TablesPage, Tags,
};

/// The operation a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    DescribeTable,
    ListStreams,
    DescribeStream,
    GetShardIterator,
    GetRecords,
    ListTables,
    ListTagsOfResource,
    /// Every operation.
    Any,
}

impl Op {
    fn matches(self, op: Op) -> bool {
        self == Op::Any || self == op
    }
}

/// Which of the calls a rule matches it fires on. Call numbers count the
/// calls the rule has matched since it was added, from 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum When {
    Always,
    /// Each matching call independently, with this probability (0.0..=1.0).
    Probability(f64),
    /// Calls n, 2n, 3n, …
    EveryNth(u32),
    /// The first n calls.
    FirstN(u32),
    /// `count` calls in a row after the first `after_calls` calls.
    Burst {
        after_calls: u32,
        count: u32,
    },
}

impl When {
    pub(crate) fn fires(self, call: u64, rng: &mut StdRng) -> bool {
        match self {
            When::Always => true,
            When::Probability(p) => {
                // NaN and out-of-range probabilities would panic in rand.
                let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
                rng.random_bool(p)
            }
            When::EveryNth(n) => n > 0 && call % u64::from(n) == 0,
            When::FirstN(n) => call <= u64::from(n),
            When::Burst { after_calls, count } => {
                call > u64::from(after_calls) && call <= u64::from(after_calls) + u64::from(count)
            }
        }
    }
}

/// One injection rule: on matching calls selected by `when`, wait `latency`
/// and/or fail with `error`, or panic.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRule {
    pub op: Op,
    pub error: Option<StreamError>,
    pub latency: Option<Duration>,
    /// Panics instead of making the call: a bug in the SDK or in our own
    /// code, which the caller's task must contain.
    pub panic: bool,
    pub when: When,
}

/// How [`FaultStream::malform_records`] breaks a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// An attribute the adapter could not read (what `problem` reports).
    Unreadable,
    /// The images the event needs are missing (a MODIFY without NewImage).
    MissingImages,
}

impl FaultRule {
    /// Fails every `op` call with `error` (narrow with [`FaultRule::when`]).
    pub fn error(op: Op, error: StreamError) -> Self {
        FaultRule {
            op,
            error: Some(error),
            latency: None,
            panic: false,
            when: When::Always,
        }
    }

    /// Panics in every `op` call (narrow with [`FaultRule::when`]).
    pub fn panic(op: Op) -> Self {
        FaultRule {
            op,
            error: None,
            latency: None,
            panic: true,
            when: When::Always,
        }
    }

    /// Delays every `op` call by `latency` (narrow with [`FaultRule::when`]).
    pub fn latency(op: Op, latency: Duration) -> Self {
        FaultRule {
            op,
            error: None,
            latency: Some(latency),
            panic: false,
            when: When::Always,
        }
    }

    pub fn when(self, when: When) -> Self {
        FaultRule { when, ..self }
    }

    pub fn with_latency(self, latency: Duration) -> Self {
        FaultRule {
            latency: Some(latency),
            ..self
        }
    }
}

/// Identifies a rule for removal and per-rule counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(u64);

/// What the decorator has injected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Calls that went through the decorator.
    pub calls: u64,
    /// Calls failed with an injected error.
    pub errors: u64,
    /// Calls delayed by injected latency.
    pub delays: u64,
    /// Calls that panicked.
    pub panics: u64,
    /// Records rewritten as malformed (each delivery counts).
    pub malformed: u64,
}

struct ActiveRule {
    id: RuleId,
    rule: FaultRule,
    matched: u64,
    fired: u64,
}

struct FaultState {
    rng: StdRng,
    rules: Vec<ActiveRule>,
    next_id: u64,
    counts: FaultCounts,
    malform: Option<(u64, Malformed)>,
}

/// Wraps `S` and injects faults by rule. Clones share rules and counts.
#[derive(Clone)]
pub struct FaultStream<S> {
    inner: S,
    state: Arc<Mutex<FaultState>>,
}

impl<S> std::fmt::Debug for FaultStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("FaultStream")
            .field("rules", &st.rules.len())
            .field("counts", &st.counts)
            .finish()
    }
}

impl<S> FaultStream<S> {
    /// No rules yet; `seed` drives `When::Probability`.
    pub fn new(inner: S, seed: u64) -> Self {
        FaultStream {
            inner,
            state: Arc::new(Mutex::new(FaultState {
                rng: StdRng::seed_from_u64(seed),
                rules: Vec::new(),
                next_id: 0,
                counts: FaultCounts::default(),
                malform: None,
            })),
        }
    }

    // Never held across an await; a panicking test must not wedge the rest.
    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The wrapped service (for its own controls, e.g. the simulator's).
    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn add_rule(&self, rule: FaultRule) -> RuleId {
        let mut st = self.lock();
        let id = RuleId(st.next_id);
        st.next_id += 1;
        st.rules.push(ActiveRule {
            id,
            rule,
            matched: 0,
            fired: 0,
        });
        id
    }

    /// Removes a rule; false if it was not there.
    pub fn remove_rule(&self, id: RuleId) -> bool {
        let mut st = self.lock();
        let before = st.rules.len();
        st.rules.retain(|r| r.id != id);
        st.rules.len() != before
    }

    /// Clears the rules and stops malforming records.
    pub fn clear_rules(&self) {
        let mut st = self.lock();
        st.rules.clear();
        st.malform = None;
    }

    /// From now on, about one record in `one_in` is delivered malformed,
    /// chosen by its sequence number so that a redelivery of the same record
    /// is malformed the same way (as a record the service keeps returning).
    pub fn malform_records(&self, one_in: u64, how: Malformed) {
        self.lock().malform = Some((one_in.max(1), how));
    }

    /// Whether the record with this sequence number is delivered malformed
    /// while [`FaultStream::malform_records`] is on.
    pub fn is_malformed(&self, sequence_number: &str) -> bool {
        self.lock()
            .malform
            .is_some_and(|(one_in, _)| malformed_pick(sequence_number, one_in))
    }

    fn malform(&self, page: &mut RecordsPage) {
        let mut st = self.lock();
        let Some((one_in, how)) = st.malform else {
            return;
        };
        for record in &mut page.records {
            if !malformed_pick(&record.sequence_number, one_in) {
                continue;
            }
            st.counts.malformed += 1;
            match how {
                Malformed::Unreadable => {
                    record.problem = Some(format!(
                        "injected: attribute {:?} is not valid DynamoDB JSON",
                        "balance"
                    ));
                    record.raw = Some(format!("{{\"injected\":\"{}\"}}", record.sequence_number));
                }
                Malformed::MissingImages => {
                    record.new_image = None;
                    record.old_image = None;
                }
            }
        }
    }

    pub fn counts(&self) -> FaultCounts {
        self.lock().counts.clone()
    }

    /// How many times a rule has fired (None once removed).
    pub fn fired(&self, id: RuleId) -> Option<u64> {
        self.lock()
            .rules
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.fired)
    }

    pub fn reset_counts(&self) {
        self.lock().counts = FaultCounts::default();
    }

    /// Applies every matching rule in order: latencies add up, the first
    /// error wins. Every matching rule counts the call, fired or not, so
    /// `EveryNth` and `Burst` stay predictable with several rules.
    fn decide(&self, op: Op) -> (Duration, Option<StreamError>, bool) {
        let mut guard = self.lock();
        let st = &mut *guard;
        st.counts.calls += 1;
        let mut latency = Duration::ZERO;
        let mut error = None;
        let mut panic = false;
        for r in st.rules.iter_mut().filter(|r| r.rule.op.matches(op)) {
            r.matched += 1;
            if !r.rule.when.fires(r.matched, &mut st.rng) {
                continue;
            }
            r.fired += 1;
            latency = latency.saturating_add(r.rule.latency.unwrap_or_default());
            if error.is_none() {
                error.clone_from(&r.rule.error);
            }
            panic |= r.rule.panic;
        }
        if !latency.is_zero() {
            st.counts.delays += 1;
        }
        if panic {
            st.counts.panics += 1;
        } else if error.is_some() {
            st.counts.errors += 1;
        }
        (latency, error, panic)
    }

    async fn inject(&self, op: Op) -> StreamResult<()> {
        let (latency, error, panic) = self.decide(op);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        // Outside the lock, so the panic cannot poison it.
        if panic {
            panic!("injected panic in {op:?}");
        }
        error.map_or(Ok(()), Err)
    }
}

impl<S: StreamApi> StreamApi for FaultStream<S> {
    async fn describe_table(&self, table: &str) -> StreamResult<TableStream> {
        self.inject(Op::DescribeTable).await?;
        self.inner.describe_table(table).await
    }

    async fn list_streams(&self, table: &str) -> StreamResult<Vec<StreamSummary>> {
        self.inject(Op::ListStreams).await?;
        self.inner.list_streams(table).await
    }

    async fn describe_stream(
        &self,
        request: &DescribeStreamRequest,
    ) -> StreamResult<StreamDescription> {
        self.inject(Op::DescribeStream).await?;
        self.inner.describe_stream(request).await
    }

    async fn get_shard_iterator(&self, request: &ShardIteratorRequest<'_>) -> StreamResult<String> {
        self.inject(Op::GetShardIterator).await?;
        self.inner.get_shard_iterator(request).await
    }

    async fn get_records(&self, iterator: &str, limit: Option<i32>) -> StreamResult<RecordsPage> {
        self.inject(Op::GetRecords).await?;
        let mut page = self.inner.get_records(iterator, limit).await?;
        self.malform(&mut page);
        Ok(page)
    }

    async fn list_tables(&self, exclusive_start: Option<&str>) -> StreamResult<TablesPage> {
        self.inject(Op::ListTables).await?;
        self.inner.list_tables(exclusive_start).await
    }

    async fn list_tags(&self, table_arn: &str) -> StreamResult<Tags> {
        self.inject(Op::ListTagsOfResource).await?;
        self.inner.list_tags(table_arn).await
    }
}

/// A stable pick of about one sequence number in `one_in` (FNV-1a: the
/// choice must not depend on the process, unlike std's hasher).
fn malformed_pick(sequence_number: &str, one_in: u64) -> bool {
    let hash = sequence_number
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    hash % one_in == 0
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;
    use crate::stream::sim::{iterator, SimConfig, SimStream, ViewType};
    use crate::stream::IteratorPosition;

    fn wrapped() -> FaultStream<SimStream> {
        let sim = SimStream::new(SimConfig {
            throttling: false,
            ..SimConfig::default()
        });
        sim.create_table("T", &["pk"], Some(ViewType::NewAndOldImages))
            .unwrap();
        FaultStream::new(sim, 42)
    }

    /// Which of `n` DescribeTable calls failed (1-based).
    async fn failing_calls(f: &FaultStream<SimStream>, n: u64) -> Vec<u64> {
        let mut failed = Vec::new();
        for call in 1..=n {
            if f.describe_table("T").await.is_err() {
                failed.push(call);
            }
        }
        failed
    }

    fn transient() -> StreamError {
        StreamError::Transient("injected 500".into())
    }

    #[tokio::test(start_paused = true)]
    async fn always_fails_every_matching_call_and_never_reaches_the_service() {
        let f = wrapped();
        f.add_rule(FaultRule::error(Op::DescribeTable, transient()));
        assert_eq!(f.describe_table("T").await, Err(transient()));
        assert_eq!(f.inner().calls().describe_table, 0);
        // Other operations pass through.
        assert_eq!(f.list_streams("T").await.unwrap().len(), 1);
        assert_eq!(
            f.counts(),
            FaultCounts {
                calls: 2,
                errors: 1,
                ..FaultCounts::default()
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn every_nth_first_n_and_burst_pick_the_documented_calls() {
        let f = wrapped();
        let id =
            f.add_rule(FaultRule::error(Op::DescribeTable, transient()).when(When::EveryNth(3)));
        assert_eq!(failing_calls(&f, 10).await, vec![3, 6, 9]);
        assert_eq!(f.fired(id), Some(3));
        assert!(f.remove_rule(id));
        assert!(!f.remove_rule(id));
        assert_eq!(f.fired(id), None);

        f.add_rule(FaultRule::error(Op::DescribeTable, transient()).when(When::FirstN(2)));
        assert_eq!(failing_calls(&f, 5).await, vec![1, 2]);
        f.clear_rules();

        f.add_rule(FaultRule::error(Op::Any, transient()).when(When::Burst {
            after_calls: 3,
            count: 4,
        }));
        assert_eq!(failing_calls(&f, 10).await, vec![4, 5, 6, 7]);
        f.clear_rules();
        f.add_rule(FaultRule::error(Op::DescribeTable, transient()).when(When::EveryNth(0)));
        assert!(failing_calls(&f, 5).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn probability_is_seeded_and_roughly_right() {
        let run = || async {
            let f = wrapped();
            f.add_rule(
                FaultRule::error(Op::DescribeTable, transient()).when(When::Probability(0.3)),
            );
            failing_calls(&f, 1000).await
        };
        let a = run().await;
        assert_eq!(a, run().await, "same seed, same faults");
        assert!((200..400).contains(&a.len()), "{}", a.len());
        let f = wrapped();
        f.add_rule(
            FaultRule::error(Op::DescribeTable, transient()).when(When::Probability(f64::NAN)),
        );
        f.add_rule(FaultRule::error(Op::DescribeTable, transient()).when(When::Probability(-1.0)));
        assert!(failing_calls(&f, 20).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn latency_is_spent_on_tokio_time_and_adds_up() {
        let f = wrapped();
        f.add_rule(FaultRule::latency(Op::GetRecords, Duration::from_secs(2)));
        f.add_rule(FaultRule::latency(Op::Any, Duration::from_millis(500)).when(When::FirstN(1)));
        let start = Instant::now();
        f.describe_table("T").await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        let arn = f.inner().stream_arn("T").unwrap();
        let shard = f.inner().open_shards("T").unwrap().remove(0);
        let it = iterator(&f, &arn, &shard, &IteratorPosition::Latest)
            .await
            .unwrap();
        let start = Instant::now();
        f.get_records(&it, None).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(f.counts().delays, 2);

        // Latency and an error together: the error comes after the wait.
        f.clear_rules();
        f.add_rule(
            FaultRule::error(
                Op::GetRecords,
                StreamError::ExpiredIterator("injected".into()),
            )
            .with_latency(Duration::from_secs(1)),
        );
        let start = Instant::now();
        assert!(matches!(
            f.get_records(&it, None).await,
            Err(StreamError::ExpiredIterator(_))
        ));
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        f.reset_counts();
        assert_eq!(f.counts(), FaultCounts::default());
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_matching_error_wins_and_every_rule_counts_the_call() {
        let f = wrapped();
        let a =
            f.add_rule(FaultRule::error(Op::DescribeTable, transient()).when(When::EveryNth(2)));
        let b = f.add_rule(
            FaultRule::error(Op::DescribeTable, StreamError::Throttled("injected".into()))
                .when(When::Always),
        );
        assert_eq!(
            f.describe_table("T").await,
            Err(StreamError::Throttled("injected".into()))
        );
        assert_eq!(f.describe_table("T").await, Err(transient()));
        assert_eq!((f.fired(a), f.fired(b)), (Some(1), Some(2)));
        assert_eq!(f.counts().errors, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_rule_panics_in_the_caller_and_leaves_the_decorator_usable() {
        let f = wrapped();
        f.add_rule(FaultRule::panic(Op::DescribeTable).when(When::FirstN(1)));
        let g = f.clone();
        let joined = tokio::spawn(async move { g.describe_table("T").await }).await;
        assert!(joined.unwrap_err().is_panic());
        assert_eq!(f.inner().calls().describe_table, 0);
        assert!(f.describe_table("T").await.is_ok());
        assert_eq!((f.counts().panics, f.counts().errors), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn malformed_records_are_picked_by_sequence_number_every_delivery() {
        let f = wrapped();
        for i in 0..200 {
            f.inner()
                .put(
                    "T",
                    [
                        (
                            "pk".to_string(),
                            crate::value::AttrValue::S(format!("k{i}")),
                        ),
                        ("v".to_string(), crate::value::AttrValue::N(i.to_string())),
                    ]
                    .into(),
                )
                .unwrap();
        }
        f.malform_records(10, Malformed::Unreadable);
        let arn = f.inner().stream_arn("T").unwrap();
        let shard = f.inner().open_shards("T").unwrap().remove(0);
        let read_all = || async {
            let it = iterator(&f, &arn, &shard, &IteratorPosition::TrimHorizon)
                .await
                .unwrap();
            f.get_records(&it, Some(1000)).await.unwrap().records
        };
        let first = read_all().await;
        let bad: Vec<&str> = first
            .iter()
            .filter(|r| r.problem.is_some())
            .map(|r| r.sequence_number.as_str())
            .collect();
        assert!((5..50).contains(&bad.len()), "{} of 200", bad.len());
        assert!(first
            .iter()
            .all(|r| r.problem.is_some() == f.is_malformed(&r.sequence_number)));
        // Redelivered: the same records, malformed the same way.
        assert_eq!(first, read_all().await);

        f.malform_records(10, Malformed::MissingImages);
        let again = read_all().await;
        assert!(again
            .iter()
            .filter(|r| f.is_malformed(&r.sequence_number))
            .all(|r| r.new_image.is_none() && r.problem.is_none()));
        f.clear_rules();
        assert!(read_all().await.iter().all(|r| r.new_image.is_some()));
        assert_eq!(f.counts().malformed, 3 * bad.len() as u64);
    }
}
