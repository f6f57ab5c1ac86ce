//! What the proxy core counts: requests by method, replies by class,
//! malformed messages, transactions, failovers, shed calls. Plain atomics
//! created at start and cloned into every worker: no label lookup per
//! message. Registered with the exposition by `control::metrics`.

use std::sync::atomic::AtomicI64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::sip::Method;

type Labels = Vec<(String, String)>;

/// Methods with a series of their own; the rest count as `other`.
const METHODS: [(Method, &str); 7] = [
    (Method::Invite, "INVITE"),
    (Method::Ack, "ACK"),
    (Method::Bye, "BYE"),
    (Method::Cancel, "CANCEL"),
    (Method::Options, "OPTIONS"),
    (Method::Register, "REGISTER"),
    (Method::Other, "other"),
];

/// The proxy core's counters, shared by every worker.
#[derive(Debug)]
pub struct ProxyMetrics {
    requests_family: Family<Labels, Counter>,
    requests: Vec<Counter>,
    replies_family: Family<Labels, Counter>,
    replies: Vec<Counter>,
    pub malformed: Counter,
    /// Transactions in progress, all workers (also `sip.max_transactions`'s measure).
    pub transactions_active: Gauge<i64, AtomicI64>,
    transactions_family: Family<Labels, Counter>,
    transactions_total: [Counter; 2],
    pub failovers: Counter,
    /// New calls refused by `sip.max_transactions`.
    pub shed: Counter,
    unreachable_family: Family<Labels, Counter>,
    /// Destinations found unreachable (udp, tcp).
    unreachable: [Counter; 2],
    /// Overload control, per worker.
    pub overload: super::overload::OverloadMetrics,
}

impl ProxyMetrics {
    /// The series for `workers` workers.
    pub fn new(workers: usize) -> Self {
        let label = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let requests_family = Family::<Labels, Counter>::default();
        let requests =
            METHODS.iter().map(|(_, m)| requests_family.get_or_create(&label("method", m)).clone()).collect();
        let replies_family = Family::<Labels, Counter>::default();
        let replies =
            (1..=6).map(|c| replies_family.get_or_create(&label("class", &format!("{c}xx"))).clone()).collect();
        let transactions_family = Family::<Labels, Counter>::default();
        let transactions_total =
            ["INVITE", "non-INVITE"].map(|t| transactions_family.get_or_create(&label("type", t)).clone());
        let unreachable_family = Family::<Labels, Counter>::default();
        let unreachable = ["udp", "tcp"].map(|t| unreachable_family.get_or_create(&label("transport", t)).clone());
        ProxyMetrics {
            overload: super::overload::OverloadMetrics::new(workers.max(1)),
            unreachable_family,
            unreachable,
            requests_family,
            requests,
            replies_family,
            replies,
            malformed: Counter::default(),
            transactions_active: Gauge::default(),
            transactions_family,
            transactions_total,
            failovers: Counter::default(),
            shed: Counter::default(),
        }
    }
}

impl ProxyMetrics {
    /// Add the series to `registry` (prefixed `wisp_` by the caller).
    pub fn register(&self, registry: &mut Registry) {
        self.overload.register(registry);
        registry.register("requests_received", "SIP requests received, by method", self.requests_family.clone());
        registry.register(
            "replies_sent",
            "SIP replies sent upstream (relayed or wisp's own), by class",
            self.replies_family.clone(),
        );
        registry.register(
            "messages_malformed",
            "Datagrams that did not parse (answered 400 or dropped)",
            self.malformed.clone(),
        );
        registry.register("transactions_active", "Transactions in progress", self.transactions_active.clone());
        registry.register("transactions", "Server transactions created, by type", self.transactions_family.clone());
        registry.register("failovers", "Requests relayed again from failure-route", self.failovers.clone());
        registry.register(
            "transport_failures",
            "Branches or keepalives failed because their destination was unreachable (ICMP on UDP, TCP connect/read/write)",
            self.unreachable_family.clone(),
        );
        registry.register(
            "calls_shed",
            "New calls answered 503 because sip.max_transactions was reached",
            self.shed.clone(),
        );
    }

    pub fn request(&self, m: Method) {
        let i = METHODS.iter().position(|(x, _)| *x == m).unwrap_or(METHODS.len() - 1);
        self.requests[i].inc();
    }

    pub fn reply_sent(&self, code: u16) {
        if let Some(c) = self.replies.get(usize::from(code / 100).wrapping_sub(1)) {
            c.inc();
        }
    }

    /// Work waiting on a destination failed: it is unreachable over `proto`.
    pub fn unreachable(&self, proto: crate::transport::Proto) {
        self.unreachable[usize::from(proto == crate::transport::Proto::Tcp)].inc();
    }

    pub fn transaction_started(&self, invite: bool) {
        self.transactions_active.inc();
        self.transactions_total[usize::from(!invite)].inc();
    }

    pub fn transaction_ended(&self) {
        self.transactions_active.dec();
    }

    /// Totals for `tm.stats`: (active, INVITE total, non-INVITE total).
    pub fn transaction_counts(&self) -> (i64, u64, u64) {
        (self.transactions_active.get(), self.transactions_total[0].get(), self.transactions_total[1].get())
    }
}
