//! Prometheus metrics: the counters, gauges and histograms the bridge keeps,
//! and their text exposition for `GET /metrics`. Knows nothing of MAX or
//! Matrix beyond the names of the two directions.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Which way a message went.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    MaxToMatrix,
    MatrixToMax,
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(match self {
            Direction::MaxToMatrix => "max_to_matrix",
            Direction::MatrixToMax => "matrix_to_max",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    pub direction: Direction,
    /// The Matrix side's kind (`m.text`, `m.image`, `m.reaction`…), from a
    /// bounded set: anything else is `other`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub direction: Direction,
    /// Why, from a fixed set of words (never a message text).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The request's name, from the homeserver client's fixed set.
    pub request: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// What was written: `messages`, `ghosts` or `inbox`.
    pub write: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

/// Kinds counted by name; the rest are `other`, so a hostile sender cannot
/// grow the label set.
const KINDS: &[&str] = &[
    "m.text",
    "m.notice",
    "m.emote",
    "m.image",
    "m.file",
    "m.video",
    "m.audio",
    "m.location",
    "m.sticker",
    "m.reaction",
    "m.room.redaction",
    "poll",
    "vote",
    "edit",
];

/// Why something was not bridged (the `reason` of failures): a portal
/// gave up after its patience, the other side refused, media could not be
/// carried.
pub const FAILURE_REASONS: &[&str] = &["gave_up", "refused", "media"];

pub struct Metrics {
    registry: Registry,
    messages: Family<MessageLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    handling: Family<DirectionLabels, Histogram>,
    event_age: Family<DirectionLabels, Histogram>,
    media_bytes: Family<DirectionLabels, Counter>,
    reconnects: Counter,
    logins: Family<StateLabels, Gauge>,
    portal_queues: Gauge,
    homeserver_requests: Family<RequestLabels, Histogram>,
    database_writes: Family<WriteLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("maxbridge");
        let messages = Family::<MessageLabels, Counter>::default();
        registry.register(
            "messages",
            "Messages (and edits, reactions, redactions) bridged",
            messages.clone(),
        );
        let failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "failures",
            "Messages or parts that could not be bridged, by reason",
            failures.clone(),
        );
        // 1 ms to about 30 s.
        let buckets = || {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 16,
            ))
        };
        let handling = Family::<DirectionLabels, Histogram>::new_with_constructor(buckets);
        registry.register(
            "handling_seconds",
            "Time from taking a message up to having bridged it",
            handling.clone(),
        );
        let event_age = Family::<DirectionLabels, Histogram>::new_with_constructor(buckets);
        registry.register(
            "event_age_seconds",
            "Age of a message (from its origin's timestamp) when it was bridged",
            event_age.clone(),
        );
        let media_bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "media_bytes",
            "Bytes of media carried across",
            media_bytes.clone(),
        );
        let reconnects = Counter::default();
        registry.register(
            "max_reconnects",
            "Connections to MAX re-established after a drop",
            reconnects.clone(),
        );
        let logins = Family::<StateLabels, Gauge>::default();
        registry.register("logins", "MAX logins by state", logins.clone());
        let portal_queues = Gauge::default();
        registry.register(
            "busy_portals",
            "Portals with work queued or in progress",
            portal_queues.clone(),
        );
        let homeserver_requests = Family::<RequestLabels, Histogram>::new_with_constructor(buckets);
        registry.register(
            "homeserver_request_seconds",
            "Time a homeserver request took, all its attempts included, by request and outcome",
            homeserver_requests.clone(),
        );
        let database_writes = Family::<WriteLabels, Histogram>::new_with_constructor(buckets);
        registry.register(
            "database_write_seconds",
            "Time the database took for the busiest writes (message mappings, ghosts, the Matrix inbox), by write and outcome",
            database_writes.clone(),
        );
        // Every series that a dashboard divides or rates exists from the
        // start at zero, so that "no failures yet" reads as 0, not as no data.
        for direction in [Direction::MaxToMatrix, Direction::MatrixToMax] {
            for reason in FAILURE_REASONS {
                let _ = failures.get_or_create(&FailureLabels { direction, reason });
            }
            let labels = DirectionLabels { direction };
            let _ = media_bytes.get_or_create(&labels);
            let _ = handling.get_or_create(&labels);
            let _ = event_age.get_or_create(&labels);
        }
        Metrics {
            registry,
            messages,
            failures,
            handling,
            event_age,
            media_bytes,
            reconnects,
            logins,
            portal_queues,
            homeserver_requests,
            database_writes,
        }
    }

    /// What the store calls after each of its busiest writes.
    pub fn database_observer(
        &self,
    ) -> impl Fn(&'static str, Duration, bool) + Send + Sync + 'static {
        timing_observer(self.database_writes.clone(), |write, outcome| WriteLabels {
            write,
            outcome,
        })
    }

    /// What the homeserver client calls after each request.
    pub fn homeserver_observer(
        &self,
    ) -> impl Fn(&'static str, Duration, bool) + Send + Sync + 'static {
        timing_observer(self.homeserver_requests.clone(), |request, outcome| {
            RequestLabels { request, outcome }
        })
    }

    /// One message (or part) bridged, `taken` after it was taken up and
    /// `age` after its origin stamped it.
    pub fn bridged(
        &self,
        direction: Direction,
        kind: &str,
        taken: Duration,
        age: Option<Duration>,
    ) {
        let kind = KINDS
            .iter()
            .find(|k| **k == kind)
            .copied()
            .unwrap_or("other")
            .to_owned();
        self.messages
            .get_or_create(&MessageLabels { direction, kind })
            .inc();
        let labels = DirectionLabels { direction };
        // Zero: a kind whose handling is not timed.
        if !taken.is_zero() {
            self.handling
                .get_or_create(&labels)
                .observe(taken.as_secs_f64());
        }
        if let Some(age) = age {
            self.event_age
                .get_or_create(&labels)
                .observe(age.as_secs_f64());
        }
    }

    pub fn failed(&self, direction: Direction, reason: &'static str) {
        debug_assert!(FAILURE_REASONS.contains(&reason), "{reason} is not listed");
        self.failures
            .get_or_create(&FailureLabels { direction, reason })
            .inc();
    }

    pub fn media(&self, direction: Direction, bytes: u64) {
        self.media_bytes
            .get_or_create(&DirectionLabels { direction })
            .inc_by(bytes);
    }

    pub fn reconnected(&self) {
        self.reconnects.inc();
    }

    /// The gauges, as they stand now (set just before each scrape).
    pub fn set_state(&self, logins: &[(&'static str, i64)], busy_portals: usize) {
        for (state, count) in logins {
            self.logins
                .get_or_create(&StateLabels { state })
                .set(*count);
        }
        self.portal_queues.set(busy_portals as i64);
    }

    /// The text exposition format (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Times into `family` what an observer is told of (what, how long,
/// whether it went through), labelled by `labels(what, outcome)`.
fn timing_observer<L>(
    family: Family<L, Histogram>,
    labels: fn(&'static str, &'static str) -> L,
) -> impl Fn(&'static str, Duration, bool) + Send + Sync + 'static
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    move |what, took, ok| {
        let outcome = if ok { "ok" } else { "error" };
        family
            .get_or_create(&labels(what, outcome))
            .observe(took.as_secs_f64());
    }
}

/// How long ago `ms` (milliseconds since the epoch) was; `None` for a time
/// in the future or none at all.
pub fn age_of(ms: i64) -> Option<Duration> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis() as i64;
    u64::try_from(now.checked_sub(ms)?)
        .ok()
        .map(Duration::from_millis)
}
