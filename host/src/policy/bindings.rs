//! Host bindings generated from `guest-sdk/wit/policy.wit` (world `router`):
//! the contract lives in the SDK crate so that the SDK packages on its own.

wasmtime::component::bindgen!({
    world: "router",
    path: "../guest-sdk/wit",
    // Every import can fail with a trap (e.g. called outside a hook call).
    imports: { default: trappable },
});

pub use self::wisp::policy::types::{
    Algorithm, BranchFailure, Destination, DstState, EditError, FromList, Level, Peer, ReplyInfo, SipMethod as Method,
    Transport,
};

/// The world policies are built against, as `guest-sdk/wit/policy.wit` names it
/// (checked by a test below).
pub const WIT_WORLD: &str = "wisp:policy/router@0.3.0";

#[cfg(test)]
mod tests {
    #[test]
    fn wit_world_matches_the_wit_file() {
        let wit = include_str!("../../../guest-sdk/wit/policy.wit");
        let (package, version) = super::WIT_WORLD.split_once("/router@").unwrap();
        assert!(
            wit.contains(&format!("package {package}@{version};")),
            "guest-sdk/wit/policy.wit declares another package"
        );
        assert!(wit.contains("world router"), "guest-sdk/wit/policy.wit has no world `router`");
    }
}
