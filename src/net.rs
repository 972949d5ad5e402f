//! Connections: accepting them the same way for every listener (HTTP, relay, SMTP),
//! and telling where a client comes from.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The next connection on `listener`, or None once `shutdown` is cancelled. An accept
/// error (out of file descriptors and the like) is logged and retried after a short
/// pause, instead of spinning.
pub async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            a = listener.accept() => match a {
                Ok(a) => return Some(a),
                Err(e) => {
                    tracing::warn!(error = %e, listener = what, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// The network a client is counted under: its IPv4 address, or its IPv6 /64 (one
/// host is usually given a whole /64, so counting single addresses would not limit it).
pub fn client_net(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::from(o)
        }
        IpAddr::V6(v6) => IpAddr::V4(
            v6.to_ipv4_mapped()
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
        ),
        v4 => v4,
    }
}

/// Whether `ip` is a loopback address, IPv4-mapped ones included.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Connection slots shared by a server's listeners: at most `max` connections, and
/// `per_ip` from one client network.
pub struct ConnectionSlots {
    max: usize,
    per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// A taken slot; dropping it frees the slot, however the session ended.
pub struct Slot {
    slots: Arc<ConnectionSlots>,
    net: IpAddr,
}

impl ConnectionSlots {
    pub fn new(max: usize, per_ip: usize) -> Arc<ConnectionSlots> {
        Arc::new(ConnectionSlots {
            max,
            per_ip,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A slot for a client at `ip`, or None when a limit is reached.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let net = client_net(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_net) = &mut *open;
        let n = by_net.get(&net).copied().unwrap_or(0);
        if n >= self.per_ip || *total >= self.max {
            return None;
        }
        by_net.insert(net, n + 1);
        *total += 1;
        Some(Slot {
            slots: self.clone(),
            net,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_net) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = by_net.get_mut(&self.net) {
            *n -= 1;
            if *n == 0 {
                by_net.remove(&self.net);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_counted_by_address_or_ipv6_slash_64() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(client_net(v4), v4);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:1234".parse().unwrap();
        assert_eq!(client_net(a), client_net(b));
        assert_ne!(
            client_net(a),
            client_net("2001:db8:0:1::1".parse().unwrap())
        );
        assert_eq!(client_net("::ffff:192.0.2.7".parse().unwrap()), v4);
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback(v4));
    }
}
