//! RFC 3263 "Locating SIP Servers", for destinations named by host name:
//! a name without a port is looked up as SRV (`_sip._udp`, `_sip._tcp`,
//! `_sips._tcp` by transport), each SRV target as A/AAAA (the answer's
//! additional records first), and a name without SRV records as A/AAAA on
//! the default port. A name with a port, or an IP address, needs no SRV.
//! NAPTR comes first when `[dns] naptr` is on and the URI names no
//! transport (off by default, as Kamailio's `dns_try_naptr`): the first
//! record by order and preference with flag `s` and a service wisp speaks
//! (`SIP+D2U`, `SIP+D2T`, `SIPS+D2T`) gives the transport and the SRV name.
//!
//! Targets are tried in RFC 2782 order: lowest priority first, and within
//! a priority in a weighted random order drawn anew for every call.
//!
//! hickory-resolver does the DNS (system resolv.conf by default, or the
//! servers of `[dns] servers`); it runs on the control thread, never on a
//! worker.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;

use crate::transport::Proto;

/// One place a name's SIP service is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub priority: u16,
    pub weight: u16,
    pub addr: SocketAddr,
}

/// A name located: its targets and until when the answer holds (the
/// smallest TTL seen).
#[derive(Debug, Clone)]
pub struct Located {
    pub targets: Vec<Target>,
    pub valid_until: Instant,
    /// Found through SRV records (else A/AAAA on the default port).
    pub srv: bool,
    /// The transport NAPTR chose, when it did.
    pub naptr: Option<Proto>,
}

#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("`{0}` does not resolve: {1}")]
    NotFound(String, String),
    #[error("dns: {0}")]
    Setup(String),
}

/// `wisp_dns_lookups_total{result}`: how names were located (`srv`,
/// `address` for A/AAAA without SRV, `failed`).
#[derive(Debug, Clone, Default)]
pub struct LocateMetrics {
    pub lookups:
        prometheus_client::metrics::family::Family<Vec<(String, String)>, prometheus_client::metrics::counter::Counter>,
}

impl LocateMetrics {
    fn count(&self, result: &str) {
        self.lookups.get_or_create(&vec![("result".to_string(), result.to_string())]).inc();
    }
}

/// The resolver wisp locates SIP servers with.
#[derive(Clone)]
pub struct Locator {
    resolver: TokioResolver,
    metrics: LocateMetrics,
    /// Query NAPTR first for URIs that name no transport.
    pub naptr: bool,
}

impl std::fmt::Debug for Locator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Locator")
    }
}

/// The SRV service label for a transport (RFC 3263 §4.1, RFC 7118 for WS).
pub fn srv_prefix(proto: Proto) -> &'static str {
    match proto {
        Proto::Udp => "_sip._udp",
        Proto::Tcp => "_sip._tcp",
        Proto::Tls => "_sips._tcp",
        Proto::Ws => "_sip._ws",
        Proto::Wss => "_sips._ws",
    }
}

/// The port a transport defaults to when neither URI nor SRV names one.
pub fn default_port(proto: Proto) -> u16 {
    match proto {
        Proto::Tls | Proto::Wss => 5061,
        _ => 5060,
    }
}

impl Locator {
    /// A resolver on `servers` (`IP:PORT`), or the system's configuration
    /// when there are none.
    pub fn new(servers: &[SocketAddr], metrics: LocateMetrics) -> Result<Locator, LocateError> {
        use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
        let builder = if servers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| LocateError::Setup(e.to_string()))?
        } else {
            let name_servers = servers
                .iter()
                .map(|s| {
                    let conn = |mut c: ConnectionConfig| {
                        c.port = s.port();
                        c
                    };
                    NameServerConfig::new(
                        s.ip(),
                        true,
                        vec![conn(ConnectionConfig::udp()), conn(ConnectionConfig::tcp())],
                    )
                })
                .collect();
            let config = ResolverConfig::from_parts(None, vec![], name_servers);
            TokioResolver::builder_with_config(config, Default::default())
        };
        let resolver = builder.build().map_err(|e| LocateError::Setup(e.to_string()))?;
        Ok(Locator { resolver, metrics, naptr: false })
    }

    /// Locate `host` for `proto`: SRV when `port` is None and `host` is a
    /// name, else (and when there is no SRV record) A/AAAA.
    pub async fn locate(&self, host: &str, port: Option<u16>, proto: Proto) -> Result<Located, LocateError> {
        let located = self.lookup(host, port, proto).await;
        self.metrics.count(match &located {
            Ok(l) if l.srv => "srv",
            Ok(_) => "address",
            Err(_) => "failed",
        });
        located
    }

    async fn lookup(&self, host: &str, port: Option<u16>, proto: Proto) -> Result<Located, LocateError> {
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            let addr = SocketAddr::new(ip, port.unwrap_or(default_port(proto)));
            let far = Instant::now() + Duration::from_secs(365 * 86_400);
            let targets = vec![Target { priority: 0, weight: 0, addr }];
            return Ok(Located { targets, valid_until: far, srv: false, naptr: None });
        }
        if port.is_none() {
            let name = format!("{}.{}.", srv_prefix(proto), host.trim_end_matches('.'));
            if let Some((targets, valid_until)) = self.srv(&name).await {
                return Ok(Located { targets, valid_until, srv: true, naptr: None });
            }
        }
        self.addresses(host, port, proto).await
    }

    /// NAPTR first (RFC 3263 §4.1) for a URI that names no transport and
    /// no port, when `naptr` is on; else (or without a usable record) as
    /// [`Locator::locate`] with `proto`.
    pub async fn locate_any(&self, host: &str, port: Option<u16>, proto: Proto) -> Result<Located, LocateError> {
        if self.naptr && port.is_none() && host.parse::<IpAddr>().is_err() {
            if let Some(l) = self.naptr_lookup(host).await {
                self.metrics.count("naptr");
                return Ok(l);
            }
        }
        self.locate(host, port, proto).await
    }

    async fn naptr_lookup(&self, host: &str) -> Option<Located> {
        let name = format!("{}.", host.trim_end_matches('.'));
        let answer = self.resolver.lookup(name.as_str(), RecordType::NAPTR).await.ok()?;
        let mut records: Vec<_> = answer
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::NAPTR(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        records.sort_by_key(|n| (n.order, n.preference));
        for n in records {
            let proto = match n.services.to_ascii_uppercase().as_slice() {
                b"SIP+D2U" => Proto::Udp,
                b"SIP+D2T" => Proto::Tcp,
                b"SIPS+D2T" => Proto::Tls,
                _ => continue,
            };
            if !n.flags.eq_ignore_ascii_case(b"s") {
                continue;
            }
            if let Some((targets, valid_until)) = self.srv(&n.replacement.to_string()).await {
                return Some(Located { targets, valid_until, srv: true, naptr: Some(proto) });
            }
        }
        None
    }

    /// The targets of an SRV name, sorted by priority; None without any.
    async fn srv(&self, name: &str) -> Option<(Vec<Target>, Instant)> {
        let srv = self.resolver.lookup(name, RecordType::SRV).await.ok()?;
        let mut valid_until = srv.valid_until();
        let mut targets = Vec::new();
        for rec in srv.answers() {
            let RData::SRV(s) = &rec.data else { continue };
            // The additional section often carries the addresses already.
            let glue: Vec<IpAddr> = srv
                .additionals()
                .iter()
                .filter(|a| a.name == s.target)
                .filter_map(|a| match &a.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })
                .collect();
            let ips = if glue.is_empty() {
                match self.resolver.lookup_ip(s.target.to_string()).await {
                    Ok(ips) => {
                        valid_until = valid_until.min(ips.valid_until());
                        ips.iter().collect()
                    }
                    Err(e) => {
                        tracing::debug!(target = %s.target, "srv target does not resolve: {e}");
                        Vec::new()
                    }
                }
            } else {
                glue
            };
            targets.extend(ips.into_iter().map(|ip| Target {
                priority: s.priority,
                weight: s.weight,
                addr: SocketAddr::new(ip, s.port),
            }));
        }
        if targets.is_empty() {
            return None;
        }
        targets.sort_by_key(|t| t.priority);
        Some((targets, valid_until))
    }

    /// A/AAAA of `host` on `port` (or the transport's default).
    async fn addresses(&self, host: &str, port: Option<u16>, proto: Proto) -> Result<Located, LocateError> {
        let not_found = |e: String| LocateError::NotFound(host.to_string(), e);
        let ips = self.resolver.lookup_ip(host).await.map_err(|e| not_found(e.to_string()))?;
        let port = port.unwrap_or(default_port(proto));
        let targets: Vec<Target> =
            ips.iter().map(|ip| Target { priority: 0, weight: 0, addr: SocketAddr::new(ip, port) }).collect();
        if targets.is_empty() {
            return Err(not_found("no address".into()));
        }
        Ok(Located { targets, valid_until: ips.valid_until(), srv: false, naptr: None })
    }
}

/// RFC 2782 order: by priority, and within one priority a weighted random
/// draw without replacement (a weight-0 target gets a small chance, as the
/// RFC asks, by counting as weight 1 among weight-0 peers only).
pub fn order(targets: &[Target], mut draw: impl FnMut(u32) -> u32) -> Vec<SocketAddr> {
    let mut out = Vec::with_capacity(targets.len());
    let mut by_priority: Vec<&Target> = targets.iter().collect();
    by_priority.sort_by_key(|t| t.priority);
    let mut i = 0;
    while i < by_priority.len() {
        let p = by_priority[i].priority;
        let mut group: Vec<&Target> = by_priority[i..].iter().take_while(|t| t.priority == p).copied().collect();
        i += group.len();
        while !group.is_empty() {
            let all_zero = group.iter().all(|t| t.weight == 0);
            let weight = |t: &Target| if all_zero { 1 } else { u32::from(t.weight) };
            let total: u32 = group.iter().map(|t| weight(t)).sum();
            let pick = if total == 0 { 0 } else { draw(total) };
            let mut acc = 0;
            let mut chosen = group.len() - 1;
            for (k, t) in group.iter().enumerate() {
                acc += weight(t);
                if pick < acc {
                    chosen = k;
                    break;
                }
            }
            out.push(group.remove(chosen).addr);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(priority: u16, weight: u16, port: u16) -> Target {
        Target { priority, weight, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
    }

    #[test]
    fn lower_priorities_come_first_and_weights_share_the_first_place() {
        let targets = [t(20, 0, 5073), t(10, 60, 5071), t(10, 40, 5072)];
        let mut first_5071 = 0;
        let n = 10_000;
        for _ in 0..n {
            let o = order(&targets, |total| fastrand::u32(..total));
            assert_eq!(o.len(), 3);
            assert_eq!(o[2].port(), 5073, "priority 20 after both priority-10 targets");
            if o[0].port() == 5071 {
                first_5071 += 1;
            }
        }
        let share = f64::from(first_5071) / f64::from(n);
        assert!((share - 0.6).abs() < 0.03, "weight 60 of 100 first {share:.3} of the time");
    }

    #[test]
    fn weight_zero_targets_still_get_their_turn() {
        let targets = [t(1, 0, 1), t(1, 0, 2)];
        let firsts: std::collections::HashSet<u16> =
            (0..200).map(|_| order(&targets, |total| fastrand::u32(..total))[0].port()).collect();
        assert_eq!(firsts.len(), 2);
    }

    #[test]
    fn service_labels_and_default_ports() {
        assert_eq!(srv_prefix(Proto::Udp), "_sip._udp");
        assert_eq!(srv_prefix(Proto::Tls), "_sips._tcp");
        assert_eq!(default_port(Proto::Tls), 5061);
    }
}
