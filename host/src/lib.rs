//! # wisp: a SIP routing engine whose routing logic is a WebAssembly policy
//!
//! Follow one INVITE through the modules, in the order they are declared:
//!
//! 1. [`transport`] receives a UDP datagram on one worker's socket (a
//!    message that belongs to another worker travels on the [`transport::Bus`]).
//! 2. [`sip`] parses it (zero-copy, RFC 3261/4475) or answers 400.
//! 3. [`transaction`] matches it: a retransmission is absorbed, an ACK for a
//!    failed INVITE ends its server transaction, a CANCEL finds its INVITE.
//! 4. [`proxy`] (RFC 3261 §16) checks it statelessly (Max-Forwards 483,
//!    overload 503, scheme 416, loop 482, Proxy-Require 420), then creates
//!    the server transaction, sends 100 Trying, pops its own Route, and
//!    asks the policy.
//! 5. [`policy`] runs the WebAssembly policy's request-route in a warm,
//!    sandboxed instance; the policy calls the [`dispatcher`] to select a
//!    destination set member and returns relay / reply / drop.
//! 6. [`proxy`] forwards on a client transaction (Via, Record-Route,
//!    Max-Forwards), relays provisional and 2xx responses upstream, and on
//!    a failure (≥ 300, fr_timer timeout, send error) runs failure-route,
//!    where the policy marks the destination and fails over with next-dst.
//! 7. [`prober`] keeps destination state honest between calls: OPTIONS
//!    keepalives from every worker, Kamailio's probing modes and thresholds.
//! 8. [`control`] answers operators: JSON-RPC with Kamailio's method names
//!    and Prometheus `/metrics`.
//! 9. [`worker`] runs one thread's loops (UDP, TCP accept, inbox, timers,
//!    keepalives) around its proxy core; [`server`] ties it together:
//!    config, worker threads, signals, reload. [`clock`] and [`hash`] are
//!    leaves every layer may use; docs/ARCHITECTURE.md gives the layer order
//!    that `host/tests/layers.rs` enforces.
// The one unsafe use is reading wisp's own compiled-policy cache (policy/cache.rs).
#![deny(unsafe_code)]

pub mod clock;
pub mod hash;
pub mod transport;
pub mod locate;
pub mod sip;
pub mod transaction;
pub mod proxy;
pub mod policy;
pub mod dispatcher;
pub mod tables;
pub mod prober;
pub mod cluster;
pub mod control;
pub mod ctl;
pub mod config;
pub mod server;
pub mod worker;
