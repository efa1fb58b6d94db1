//! Worker listings in progress: the state each listing began at, held open so that every page
//! of it shows the same revision while the fleet churns (a snapshot, as a Kubernetes list with
//! a continue token is).
//!
//! A listing lives on the node that began it (the leader, which `ListWorkers` is forwarded
//! to) for [`LISTING_IDLE`] after its last page; at most [`MAX_LISTINGS`] are held, the idlest
//! dropped first. A page token of a listing no longer held is refused with OUT_OF_RANGE, and
//! the client lists again. Held state costs the database the pages it still sees, so both
//! bounds are small.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::pages::StateAt;

/// How long a listing is held after its last page.
pub const LISTING_IDLE: Duration = Duration::from_secs(60);
/// Most listings held at once.
pub const MAX_LISTINGS: usize = 64;

struct Held {
    state: Arc<StateAt>,
    last_used: Instant,
}

#[derive(Default)]
pub struct Listings {
    held: Mutex<HashMap<u64, Held>>,
}

impl Listings {
    /// Holds `state` for a new listing; its id.
    pub fn begin(&self, state: Arc<StateAt>) -> u64 {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|_, listing| listing.last_used.elapsed() < LISTING_IDLE);
        while held.len() >= MAX_LISTINGS {
            let Some(idlest) = held.iter().min_by_key(|(_, listing)| listing.last_used).map(|(id, _)| *id) else {
                break;
            };
            held.remove(&idlest);
        }
        let mut id = rand::random::<u64>();
        while id == 0 || held.contains_key(&id) {
            id = rand::random();
        }
        held.insert(id, Held { state, last_used: Instant::now() });
        id
    }

    /// The state listing `id` began at, if it is still held.
    pub fn resume(&self, id: u64) -> Option<Arc<StateAt>> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let listing = held.get_mut(&id).filter(|listing| listing.last_used.elapsed() < LISTING_IDLE)?;
        listing.last_used = Instant::now();
        Some(listing.state.clone())
    }

    /// Lets go of listing `id` (its last page was sent).
    pub fn end(&self, id: u64) {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
}
