//! Admission of TCP connections before their association exists.
//!
//! An association slot (`--max-associations`) is taken only once the association is
//! established (A-ASSOCIATE-AC sent), so connections that never send a request cannot hold
//! slots. Connections still waiting for their A-ASSOCIATE-RQ are bounded separately: at most
//! `max_pending` in all and `max_pending_per_peer` from one IP address, each for at most the
//! ARTIM timeout. A connection over either bound is closed at once, without reading from it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Admission {
    pending: Arc<Semaphore>,
    per_peer: Mutex<HashMap<IpAddr, usize>>,
    max_per_peer: usize,
}

/// Held while a connection has no association yet; dropping it frees its place.
pub struct Ticket {
    admission: Arc<Admission>,
    peer: IpAddr,
    _permit: OwnedSemaphorePermit,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TooManyPending,
    TooManyFromPeer,
}

impl Admission {
    pub fn new(max_pending: usize, max_per_peer: usize) -> Arc<Admission> {
        Arc::new(Admission {
            pending: Arc::new(Semaphore::new(max_pending)),
            per_peer: Mutex::new(HashMap::new()),
            max_per_peer,
        })
    }

    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Ticket, Refusal> {
        let mut per_peer = self.per_peer.lock().unwrap_or_else(|p| p.into_inner());
        let count = per_peer.get(&peer).copied().unwrap_or(0);
        if count >= self.max_per_peer {
            return Err(Refusal::TooManyFromPeer);
        }
        let permit = self
            .pending
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::TooManyPending)?;
        per_peer.insert(peer, count + 1);
        Ok(Ticket {
            admission: self.clone(),
            peer,
            _permit: permit,
        })
    }

    /// Connections admitted and not yet established.
    pub fn pending_from(&self, peer: IpAddr) -> usize {
        let per_peer = self.per_peer.lock().unwrap_or_else(|p| p.into_inner());
        per_peer.get(&peer).copied().unwrap_or(0)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut per_peer = self
            .admission
            .per_peer
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                per_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_per_peer_and_in_all_and_frees_on_drop() {
        let a = Admission::new(3, 2);
        let x: IpAddr = "127.0.0.2".parse().unwrap();
        let y: IpAddr = "127.0.0.3".parse().unwrap();
        let t1 = a.admit(x).unwrap();
        let _t2 = a.admit(x).unwrap();
        assert_eq!(a.admit(x).err(), Some(Refusal::TooManyFromPeer));
        let _t3 = a.admit(y).unwrap();
        assert_eq!(a.admit(y).err(), Some(Refusal::TooManyPending));
        drop(t1);
        assert_eq!(a.pending_from(x), 1);
        assert!(a.admit(x).is_ok());
    }
}
