//! The workers' inboxes: everything that reaches a worker besides its own
//! UDP sockets goes through here. TCP connection tasks deliver the messages
//! they frame, any thread announces a peer found unreachable (to every
//! worker: each fails its own branches), name lookups deliver their answer
//! to the worker that asked, and a worker hands a message to the worker
//! that owns its transaction. One unbounded FIFO channel per worker, so
//! messages from one sender to one worker keep their order.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::Proto;
use crate::sip::Message;

/// What reaches a worker through its inbox.
#[derive(Debug)]
pub enum Event {
    /// A whole message read from `src` on a connection of listen entry `listen`.
    Message { bytes: Vec<u8>, src: SocketAddr, listen: usize },
    /// A parsed message another worker received for a transaction of ours.
    Handoff { msg: Message, src: SocketAddr, listen: usize },
    /// `peer` cannot be reached over `proto` (connection refused, reset or
    /// timed out; ICMP unreachable).
    Failed { proto: Proto, peer: SocketAddr },
    /// A host name lookup finished (None: it failed).
    Resolved { host: String, answer: Option<Vec<IpAddr>> },
}

/// Every worker's inbox.
#[derive(Debug)]
pub struct Bus {
    inboxes: Vec<mpsc::UnboundedSender<Event>>,
}

impl Bus {
    /// A bus for `workers` workers, and each worker's receiving end.
    pub fn new(workers: usize) -> (Arc<Bus>, Vec<mpsc::UnboundedReceiver<Event>>) {
        let (inboxes, receivers) = (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        (Arc::new(Bus { inboxes }), receivers)
    }

    /// Hand `event` to `worker` (dropped if that worker has stopped).
    pub fn notify(&self, worker: usize, event: Event) {
        if let Some(inbox) = self.inboxes.get(worker) {
            let _ = inbox.send(event);
        }
    }

    /// Tell every worker that `peer` cannot be reached over `proto`. Also for
    /// UDP: an ICMP error lands on whichever socket of the SO_REUSEPORT group
    /// the kernel picks, not always the sender's. Each worker fails what it
    /// has waiting on `peer`; nothing is counted here, since a report may
    /// name a client (a response to a closed port), not a destination.
    pub fn announce_failure(&self, proto: Proto, peer: SocketAddr) {
        for inbox in &self.inboxes {
            let _ = inbox.send(Event::Failed { proto, peer });
        }
    }
}
