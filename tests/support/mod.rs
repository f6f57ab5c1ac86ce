//! Test support shared by every end-to-end test: a running wisp, fake
//! carriers (UAS) and callers (UAC) over real UDP sockets on 127.0.0.1.

#![allow(dead_code)]

pub mod nats;
pub mod postgres;
pub mod process;
pub mod tls;
pub mod uac;
pub mod uas;
pub mod ws;

pub use process::{config_check, policy_path, root, Wisp, WispConfig};
pub use uac::Uac;
pub use uas::{Behaviour, Uas};

use std::time::Duration;

/// Generous bound on anything that should happen "at once" on loopback.
pub const PROMPT: Duration = Duration::from_secs(3);

/// Poll `done` every 10 ms until it holds or `within` passes; true when it
/// held. The way to wait for something observable, instead of a sleep.
pub fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Let `d` pass to show that something does *not* happen (a message not
/// sent, a state not reached). Deliberate, unlike a sleep used to wait.
pub fn quiet_for(d: Duration) {
    std::thread::sleep(d);
}

/// Three answering carriers and a list with the first two as set 1 (equal
/// priority) and the third as set 2.
pub fn three_carriers() -> (Uas, Uas, Uas, String) {
    let (a, b, c) = (Uas::start(Behaviour::Answer), Uas::start(Behaviour::Answer), Uas::start(Behaviour::Answer));
    let list = format!("1 {} 0 10\n1 {} 0 10\n2 {}\n", a.uri(), b.uri(), c.uri());
    (a, b, c, list)
}

/// CPU time (user + system) of a process, in clock ticks (10 ms on Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = stat.rsplit(')').next().unwrap();
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}
