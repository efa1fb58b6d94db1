//! Connection caps: one listener-wide count and one count per source IP, taken at accept and
//! given back when the connection's [`Permit`] drops. A mutex guards both counts; it is taken
//! twice per connection (open and close), never per request or per read.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The counts of one listener.
#[derive(Debug)]
pub struct ConnectionCaps {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One open connection's place under the caps; dropping it frees the place.
#[derive(Debug)]
pub struct Permit {
    caps: Arc<ConnectionCaps>,
    ip: IpAddr,
}

impl ConnectionCaps {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self { max_total, max_per_ip, open: Mutex::default() })
    }

    /// A place for one more connection from `ip`, or `None` when a cap is reached.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let from_ip = open.per_ip.get(&ip).copied().unwrap_or(0);
        if open.total >= self.max_total || from_ip >= self.max_per_ip {
            return None;
        }
        open.total += 1;
        open.per_ip.insert(ip, from_ip + 1);
        Some(Permit { caps: self.clone(), ip })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.caps.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.total -= 1;
        if let Some(count) = open.per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn the_per_ip_cap_refuses_one_address_while_others_connect() {
        let caps = ConnectionCaps::new(10, 2);
        let held: Vec<_> = (0..2).map(|_| caps.try_acquire(ip(1)).expect("under the cap")).collect();
        assert!(caps.try_acquire(ip(1)).is_none(), "a third connection from one IP");
        let other = caps.try_acquire(ip(2)).expect("another IP still connects");
        drop(held);
        assert_eq!(caps.open(), 1);
        assert!(caps.try_acquire(ip(1)).is_some(), "places come back when connections close");
        drop(other);
        assert_eq!(caps.open(), 0);
        assert!(caps.open.lock().unwrap().per_ip.is_empty(), "no entry is kept for a closed IP");
    }

    #[test]
    fn the_listener_cap_counts_every_address() {
        let caps = ConnectionCaps::new(3, 3);
        let held: Vec<_> = (1..=3).map(|last| caps.try_acquire(ip(last)).unwrap()).collect();
        assert!(caps.try_acquire(ip(4)).is_none());
        drop(held);
        assert!(caps.try_acquire(ip(4)).is_some());
    }
}
