//! The workers' inboxes: everything that reaches a worker besides its own
//! UDP sockets goes through here. TCP connection tasks deliver the messages
//! they frame, any thread announces a peer found unreachable (to every
//! worker: each fails its own branches), name lookups deliver their answer
//! to the worker that asked, and a worker hands a message to the worker
//! that owns its transaction. Two FIFO channels per worker: messages
//! (bounded: beyond [`MESSAGES_QUEUED`] a message is dropped and counted,
//! as the kernel drops a datagram, instead of growing memory under
//! overload) and the rare control events (failures, lookups), which are
//! never dropped. Messages from one sender to one worker keep their order.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use super::Proto;

/// Messages one worker's inbox holds before it drops.
pub const MESSAGES_QUEUED: usize = 16_384;
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
    /// `ttl`: how long the answer holds, when DNS said (SRV lookups).
    Resolved { host: String, answer: Option<Vec<SocketAddr>>, ttl: Option<std::time::Duration> },
    /// Another node of the cluster took a destination up or down: run the
    /// policy's destination-event hook (`local` false).
    DestinationChanged { set_id: u32, uri: String, up: bool },
}

/// Every worker's inbox.
#[derive(Debug)]
pub struct Bus {
    messages: Vec<mpsc::Sender<Event>>,
    control: Vec<mpsc::UnboundedSender<Event>>,
    dropped: Counter,
}

/// One worker's receiving ends.
#[derive(Debug)]
pub struct Inbox {
    pub messages: mpsc::Receiver<Event>,
    pub control: mpsc::UnboundedReceiver<Event>,
}

impl Inbox {
    /// The next event, control events first.
    pub async fn recv(&mut self) -> Option<Event> {
        tokio::select! {
            biased;
            Some(e) = self.control.recv() => Some(e),
            Some(e) = self.messages.recv() => Some(e),
            else => None,
        }
    }
}

impl Bus {
    /// A bus for `workers` workers, and each worker's receiving end;
    /// `dropped` counts messages refused by a full inbox.
    pub fn new(workers: usize, dropped: Counter) -> (Arc<Bus>, Vec<Inbox>) {
        let (mut messages, mut control, mut inboxes) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..workers {
            let (mtx, mrx) = mpsc::channel(MESSAGES_QUEUED);
            let (ctx, crx) = mpsc::unbounded_channel();
            messages.push(mtx);
            control.push(ctx);
            inboxes.push(Inbox { messages: mrx, control: crx });
        }
        (Arc::new(Bus { messages, control, dropped }), inboxes)
    }

    /// Hand `event` to `worker`. A message meets a full inbox by being
    /// dropped (and counted); control events always get through.
    pub fn notify(&self, worker: usize, event: Event) {
        match event {
            Event::Message { .. } | Event::Handoff { .. } => {
                if let Some(inbox) = self.messages.get(worker) {
                    if let Err(mpsc::error::TrySendError::Full(_)) = inbox.try_send(event) {
                        self.dropped.inc();
                    }
                }
            }
            _ => {
                if let Some(inbox) = self.control.get(worker) {
                    let _ = inbox.send(event);
                }
            }
        }
    }

    /// Tell every worker that `peer` cannot be reached over `proto`. Also for
    /// UDP: an ICMP error lands on whichever socket of the SO_REUSEPORT group
    /// the kernel picks, not always the sender's. Each worker fails what it
    /// has waiting on `peer`; nothing is counted here, since a report may
    /// name a client (a response to a closed port), not a destination.
    pub fn announce_failure(&self, proto: Proto, peer: SocketAddr) {
        for inbox in &self.control {
            let _ = inbox.send(Event::Failed { proto, peer });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_inbox_drops_and_counts_messages_but_never_control_events() {
        let dropped = Counter::default();
        let (bus, mut inboxes) = Bus::new(1, dropped.clone());
        let src: SocketAddr = "127.0.0.1:5080".parse().unwrap();
        for _ in 0..MESSAGES_QUEUED + 3 {
            bus.notify(0, Event::Message { bytes: vec![b'x'], src, listen: 0 });
        }
        assert_eq!(dropped.get(), 3, "beyond the bound, messages are dropped and counted");
        bus.announce_failure(Proto::Udp, src);
        let first = inboxes[0].recv().await.unwrap();
        assert!(matches!(first, Event::Failed { .. }), "control events pass first, never dropped");
        let mut n = 0;
        while let Ok(Event::Message { .. }) = inboxes[0].messages.try_recv() {
            n += 1;
        }
        assert_eq!(n, MESSAGES_QUEUED);
    }
}
