//! The bounded in-memory store behind `previous_response_id` and `GET /v1/responses/{id}`:
//! at most `capacity` responses (the oldest leaves first), each for at most `ttl`. Nothing is
//! written to disk; a restart forgets everything.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One stored response.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The response object as answered.
    pub response: Value,
    /// The whole conversation in chat form: the stored history it continued, its input
    /// (without `instructions`, which do not carry over) and its answer.
    pub conversation: Vec<Value>,
}

/// The store (`--responses-store-size`, `--responses-store-ttl`).
#[derive(Debug)]
pub struct ResponseStore {
    capacity: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<String, (Instant, Stored)>,
    /// Ids oldest first.
    order: VecDeque<String>,
}

impl ResponseStore {
    /// A store of at most `capacity` responses kept for `ttl` (capacity 0: nothing is kept).
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity,
            ttl,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops what has expired by `now`.
    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some(id) = inner.order.front() {
            match inner.by_id.get(id) {
                Some((t, _)) if now.duration_since(*t) < self.ttl => break,
                _ => {
                    let id = inner.order.pop_front().unwrap_or_default();
                    inner.by_id.remove(&id);
                }
            }
        }
    }

    /// Keeps `s` under `id`, evicting the oldest beyond the capacity.
    pub fn put(&self, id: String, s: Stored) {
        self.put_at(id, s, Instant::now());
    }

    fn put_at(&self, id: String, s: Stored, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        if inner.by_id.insert(id.clone(), (now, s)).is_none() {
            inner.order.push_back(id);
        }
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.by_id.remove(&old);
            }
        }
    }

    /// The response stored under `id`, unless unknown, evicted or expired.
    pub fn get(&self, id: &str) -> Option<Stored> {
        self.get_at(id, Instant::now())
    }

    fn get_at(&self, id: &str, now: Instant) -> Option<Stored> {
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        inner.by_id.get(id).map(|(_, s)| s.clone())
    }

    /// Removes `id`; whether it was there.
    pub fn remove(&self, id: &str) -> bool {
        let mut inner = self.lock();
        let had = inner.by_id.remove(id).is_some();
        inner.order.retain(|i| i != id);
        had
    }

    /// How many are kept now.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(n: i64) -> Stored {
        Stored {
            response: json!({"n": n}),
            conversation: vec![],
        }
    }

    #[test]
    fn capacity_evicts_the_oldest_and_ttl_expires() {
        let s = ResponseStore::new(2, Duration::from_secs(10));
        let t = Instant::now();
        s.put_at("a".into(), stored(1), t);
        s.put_at("b".into(), stored(2), t + Duration::from_secs(1));
        s.put_at("c".into(), stored(3), t + Duration::from_secs(2));
        assert!(s.get_at("a", t + Duration::from_secs(2)).is_none());
        assert_eq!(
            s.get_at("b", t + Duration::from_secs(2)).unwrap().response,
            json!({"n": 2})
        );
        assert_eq!(s.len(), 2);
        // b was stored at t+1: gone at t+11; c (t+2) still there.
        assert!(s.get_at("b", t + Duration::from_secs(11)).is_none());
        assert!(s.get_at("c", t + Duration::from_secs(11)).is_some());
        assert!(s.remove("c"));
        assert!(!s.remove("c"));
        assert!(s.is_empty());
        let none = ResponseStore::new(0, Duration::from_secs(10));
        none.put("x".into(), stored(1));
        assert!(none.get("x").is_none());
    }
}
