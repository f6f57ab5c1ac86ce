//! SIGHUP reloads the dispatcher list and the policy; a bad file is refused
//! and the running configuration keeps serving.

use crate::support::*;
use wisp::sip::Method;

#[test]
fn sighup_reloads_the_list_and_refuses_a_bad_one() {
    let a = Uas::start(Behaviour::Answer);
    let b = Uas::start(Behaviour::Answer);
    let wisp = Wisp::start(WispConfig::new(format!("1 {}\n", a.uri())));
    let mut uac = Uac::new(wisp.addr);
    assert_eq!(uac.invite("rl-1", "", PROMPT).final_code(), Some(200));
    assert_eq!(a.count(Method::Invite), 1);

    std::fs::write(wisp.dir.join("dispatcher.list"), format!("1 {}\n", b.uri())).unwrap();
    wisp.signal("HUP");
    assert!(wisp.wait_log("dispatcher list reloaded", PROMPT), "{:?}", wisp.log());
    assert!(wisp.wait_log("policy reloaded", PROMPT), "{:?}", wisp.log());
    assert_eq!(uac.invite("rl-2", "", PROMPT).final_code(), Some(200));
    assert_eq!(b.count(Method::Invite), 1, "the new list serves");

    std::fs::write(wisp.dir.join("dispatcher.list"), format!("1 {}\nthis is not a line\n", a.uri())).unwrap();
    wisp.signal("HUP");
    assert!(wisp.wait_log("dispatcher reload refused", PROMPT), "{:?}", wisp.log());
    let refusal = wisp.log().into_iter().find(|l| l.contains("dispatcher reload refused")).unwrap();
    assert!(refusal.contains("dispatcher.list:2:"), "names file and line: {refusal}");
    assert_eq!(uac.invite("rl-3", "", PROMPT).final_code(), Some(200));
    assert_eq!(b.count(Method::Invite), 2, "the running list keeps serving");
}

#[test]
fn a_broken_policy_is_refused_on_reload() {
    let a = Uas::start(Behaviour::Answer);
    let mut cfg = WispConfig::new(format!("1 {}\n", a.uri()));
    // A copy of the policy that the test can break.
    let dir = std::env::temp_dir().join(format!("wisp-e2e-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("policy.wasm");
    std::fs::copy(policy_path("primary_backup"), &copy).unwrap();
    cfg.policy = copy.clone();
    let wisp = Wisp::start(cfg);
    let mut uac = Uac::new(wisp.addr);
    assert_eq!(uac.invite("bp-1", "", PROMPT).final_code(), Some(200));

    std::fs::write(&copy, b"not a component").unwrap();
    wisp.signal("HUP");
    assert!(wisp.wait_log("policy reload refused", PROMPT), "{:?}", wisp.log());
    let refusal = wisp.log().into_iter().find(|l| l.contains("policy reload refused")).unwrap();
    assert!(refusal.contains("not a WebAssembly file"), "{refusal}");
    assert_eq!(uac.invite("bp-2", "", PROMPT).final_code(), Some(200), "version 1 keeps serving");
    let _ = std::fs::remove_dir_all(&dir);
}
