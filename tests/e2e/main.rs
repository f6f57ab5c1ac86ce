//! End-to-end tests: the real `wisp` binary, real policies built from
//! policies/ and tests/policies/, real UDP sockets on 127.0.0.1, fake
//! carriers and callers from tests/support, and sipp where a test says so.
//! One module per behaviour.

#[path = "../support/mod.rs"]
mod support;

mod algorithms;
mod call;
mod cluster;
mod cancel;
mod control;
mod dns;
mod examples;
mod failover;
mod hot_swap;
mod kamailio;
mod locate;
mod overload;
mod policy_boundary;
mod postgres;
mod own_faults;
mod primary_backup;
mod prober;
mod proxy_checks;
mod reload;
mod robustness;
mod scaffold;
mod shutdown;
mod sipp;
mod tables;
mod tls;
mod tcp;
mod websocket;
mod torture;
mod toolbox;
