//! How many subscribers may be connected: at most `max_connections` sockets
//! and event streams in all, and `max_per_ip` from one address. Taking a
//! place never waits: a full gateway answers 503 at once, before the
//! upgrade.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Admission {
    total: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// A subscriber's place, given back when dropped.
pub struct Place {
    _total: OwnedSemaphorePermit,
    ip: IpAddr,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Admission {
    pub fn new(max_connections: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(max_connections)),
            per_ip: Arc::default(),
        }
    }

    /// A place for a subscriber from `ip`, or why there is none.
    pub fn admit(&self, ip: IpAddr, max_per_ip: usize) -> Result<Place, &'static str> {
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| "too many WebSocket connections")?;
        let mut per_ip = lock(&self.per_ip);
        let held = per_ip.entry(ip).or_insert(0);
        if max_per_ip > 0 && *held >= max_per_ip {
            return Err("too many connections from this address");
        }
        *held += 1;
        Ok(Place {
            _total: total,
            ip,
            per_ip: self.per_ip.clone(),
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut per_ip = lock(&self.per_ip);
        if let Some(held) = per_ip.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

fn lock(map: &Mutex<HashMap<IpAddr, usize>>) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
    map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_limited_in_all_and_per_address_and_given_back() {
        let admission = Admission::new(3);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = admission.admit(a, 2).unwrap();
        let _second = admission.admit(a, 2).unwrap();
        assert!(admission.admit(a, 2).is_err(), "per address");
        let _third = admission.admit(b, 2).unwrap();
        assert!(admission.admit(b, 2).is_err(), "in all");
        drop(first);
        assert!(admission.admit(a, 2).is_ok(), "given back");
    }
}
