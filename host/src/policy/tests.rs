//! The host functions on their own: a `HostState` with a call context, no
//! wasm. What a policy sees when it calls select-dst / next-dst / mark-dst,
//! edits headers or asks is-from-list.

use std::sync::Arc;

use super::bindings::wisp::policy::dispatcher::Host as Dispatcher;
use super::bindings::wisp::policy::message::Host as MessageHost;
use super::bindings::{Algorithm, DstState, EditError, FromList};
use super::context::{CallContext, HostState};
use crate::dispatcher;
use crate::transport::Proto;

const LIST: &str = "1 sip:127.0.0.1:5071 0 30\n1 sip:127.0.0.1:5072 0 20\n1 sip:127.0.0.1:5073 0 10\n\
2 sip:127.0.0.1:5080;transport=tcp\n";

const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-1\r\n\
From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\nCall-ID: host-fns\r\nCSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

fn state() -> HostState {
    let ds = Arc::new(dispatcher::Dispatcher::from_list(LIST, "test.list", 1).unwrap());
    let limits = wasmtime::StoreLimitsBuilder::new().build();
    HostState::new(ds, "test".into(), limits, Arc::default(), Arc::default(), std::time::Instant::now())
}

fn in_call(source: &str, transport: Proto) -> HostState {
    let mut s = state();
    let msg = crate::sip::parse(INVITE.as_bytes().to_vec(), &crate::sip::Limits::default()).unwrap();
    s.begin_call(CallContext::new(msg, source.parse().unwrap(), transport));
    s
}

fn target(s: &mut HostState) -> Option<String> {
    s.call().unwrap().route.target().map(|d| d.uri.clone())
}

#[test]
fn select_next_and_mark_walk_the_failover_list() {
    let mut s = in_call("127.0.0.1:9999", Proto::Udp);
    let first = s.select_dst(1, Algorithm::Serial, None, None).unwrap().unwrap();
    assert_eq!(first.uri, "sip:127.0.0.1:5071", "serial: highest priority first");
    assert_eq!(s.call().unwrap().route.failover.len(), 3, "the failover list is kept for failure-route");
    assert!(s.mark_dst(DstState::Inactive, false).unwrap(), "marks the current destination");
    assert_eq!(s.events.len(), 1, "going down raises destination-event once the call is over");
    assert!(!s.events[0].up);
    let next = s.next_dst().unwrap().unwrap();
    assert_eq!(next.uri, "sip:127.0.0.1:5072");
    assert_eq!(target(&mut s).as_deref(), Some("sip:127.0.0.1:5072"));
    let ds = s.dispatcher.clone();
    let snap = ds.snapshot();
    let a = &snap.set(1).unwrap().destinations[0];
    assert_eq!(a.failed_over.load(std::sync::atomic::Ordering::Relaxed), 1, "counted as failed over");
    assert_eq!(s.next_dst().unwrap().unwrap().uri, "sip:127.0.0.1:5073");
    assert!(s.next_dst().unwrap().is_none(), "the list is exhausted");
    assert_eq!(target(&mut s), None, "nothing to relay to any more");
    assert!(!s.mark_dst(DstState::Inactive, false).unwrap(), "no current destination to mark");
    // The next selection skips the destination marked inactive.
    let mut s2 = in_call("127.0.0.1:9999", Proto::Udp);
    s2.dispatcher = ds.clone();
    assert_eq!(s2.select_dst(1, Algorithm::Serial, None, None).unwrap().unwrap().uri, "sip:127.0.0.1:5072");
    assert!(s2.select_dst(7, Algorithm::Serial, None, None).unwrap().is_none(), "an unknown set selects nothing");
}

#[test]
fn a_limit_shortens_the_failover_list() {
    let mut s = in_call("127.0.0.1:9999", Proto::Udp);
    s.select_dst(1, Algorithm::Serial, Some(2), None).unwrap();
    assert_eq!(s.call().unwrap().route.failover.len(), 2);
}

#[test]
fn header_edits_are_checked_at_the_boundary() {
    let mut s = in_call("127.0.0.1:9999", Proto::Udp);
    assert!(s.set_header("X-Route".into(), "a".into()).unwrap().is_ok());
    assert_eq!(s.header("X-Route".into()).unwrap().as_deref(), Some("a"));
    let injected = s.set_header("X-Route".into(), "a\r\nX-Injected: yes".into()).unwrap();
    assert_eq!(injected, Err(EditError::BadValue), "no header injection");
    assert!(s.append_header("Bad Name".into(), "v".into()).unwrap().is_err(), "a header name is a token");
    for owned in ["Via", "Call-ID", "CSeq", "Content-Length", "v", "i", "l"] {
        assert!(s.set_header(owned.into(), "x".into()).unwrap().is_err(), "{owned} is wisp's");
        assert_eq!(s.remove_header(owned.into()).unwrap(), Err(EditError::Protected), "{owned} cannot be removed");
    }
    assert_eq!(s.header("Call-ID".into()).unwrap().as_deref(), Some("host-fns"));
    assert!(s.set_request_uri("not a uri".into()).unwrap().is_err());
    assert!(s.set_request_uri("sip:carol@127.0.0.1:5090".into()).unwrap().is_ok());
    assert_eq!(s.request_uri().unwrap().as_deref(), Some("sip:carol@127.0.0.1:5090"));
    assert!(s.current_dst().unwrap().is_none(), "nothing selected yet");
    let chosen = s.select_dst(1, Algorithm::Serial, None, None).unwrap().map(|d| d.uri);
    assert_eq!(s.current_dst().unwrap().map(|d| d.uri), chosen, "current-dst is $du");
    let next = s.next_dst().unwrap().map(|d| d.uri);
    assert_eq!(s.current_dst().unwrap().map(|d| d.uri), next);
}

#[test]
fn is_from_list_matches_address_port_and_transport_as_asked() {
    let mut s = in_call("127.0.0.1:5072", Proto::Udp);
    assert_eq!(s.is_from_list(None, FromList::empty()).unwrap(), Some(1), "address, port and transport match set 1");
    let mut s = in_call("127.0.0.1:6000", Proto::Udp);
    assert_eq!(s.is_from_list(None, FromList::empty()).unwrap(), None, "another port");
    assert_eq!(s.is_from_list(None, FromList::IGNORE_PORT).unwrap(), Some(1), "mode 1 ignores the port");
    let mut s = in_call("127.0.0.1:5080", Proto::Udp);
    assert_eq!(s.is_from_list(Some(2), FromList::empty()).unwrap(), None, "set 2 is reached over TCP");
    assert_eq!(s.is_from_list(Some(2), FromList::IGNORE_TRANSPORT).unwrap(), Some(2), "mode 2 ignores the transport");
}

#[test]
fn message_functions_trap_outside_a_routing_hook() {
    // destination-event and init have no message in hand.
    let mut s = state();
    assert!(s.method().is_err());
    assert!(s.select_dst(1, Algorithm::RoundRobin, None, None).is_err());
    assert!(s.next_dst().is_err());
    // Functions that read only the sets work.
    assert!(s.set_exists(1).unwrap());
    assert_eq!(s.destinations(1).unwrap().len(), 3);
    assert!(s.is_active(1, Some("sip:127.0.0.1:5073".into())).unwrap());
}

#[test]
fn a_timeout_never_takes_the_last_usable_destination_down() {
    let mut s = in_call("127.0.0.1:9999", Proto::Udp);
    let ds = s.dispatcher.clone();
    let snap = ds.snapshot();
    let set = snap.set(1).unwrap();
    set.destinations[1].mark(dispatcher::Mark::Inactive, false, 1);
    set.destinations[2].mark(dispatcher::Mark::Inactive, false, 1);
    s.select_dst(1, Algorithm::Serial, None, None).unwrap().unwrap();
    s.call().unwrap().failure = Some(super::BranchFailure::Timeout);
    assert!(!s.mark_dst(DstState::Inactive, false).unwrap(), "not applied");
    let last = &set.destinations[0];
    assert!(last.is_usable(), "the last usable destination stays usable after a timeout");
    assert_eq!(last.state_letters(), "AP", "flagged for probing: keepalives decide");
    // Its own reply (a 503) or an unreachable transport does take it down.
    s.call().unwrap().failure = Some(super::BranchFailure::Reply(503));
    assert!(s.mark_dst(DstState::Inactive, false).unwrap());
    assert!(!last.is_usable());
}
