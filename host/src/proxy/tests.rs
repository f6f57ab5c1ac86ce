//! Unit tests of the §16 core: one [`Worker`](super::Worker) driven
//! in-process with SIP bytes, a fake [`Sender`](super::Sender) that records
//! what would go on the wire, a manual clock, and a real wasm test policy
//! (`tests/policies/by-header`, built by `scripts/build-policies.sh`).
//! Nothing waits: time moves when a test says so.

mod harness;

mod best_response;
mod cancel;
mod failover;
mod forwarding;
