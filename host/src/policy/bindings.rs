//! Host bindings generated from `wit/policy.wit` (world `router`).

wasmtime::component::bindgen!({
    world: "router",
    path: "../wit",
    // Every import can fail with a trap (e.g. called outside a hook call).
    imports: { default: trappable },
});

pub use self::wisp::policy::types::{Algorithm, BranchFailure, Destination, DstState, Level, Peer, ReplyInfo};
