//! Connection-pool limits towards one destination: Envoy's circuit-breaker thresholds.
//!
//! With HTTP/1.1 every request in flight holds a connection, so: a request gets a
//! connection while fewer than `max_connections` (and `max_requests`) are in
//! use; otherwise it waits, if fewer than `max_pending` already wait; otherwise
//! it overflows at once (the caller answers 503, which the outlier detection does
//! not count: the destination did nothing wrong).
//!
//! [`PoolGate`] is the decision as plain counters: the engine keeps the queue of
//! waiters (e.g. oneshot senders) in the same order and wakes as many as the gate
//! says.

/// Connection-pool limits towards the destination (Envoy's circuit-breaker thresholds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    pub max_connections: usize,
    pub max_pending: usize,
    pub max_requests: usize,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            max_connections: 1024,
            max_pending: 1024,
            max_requests: 1024,
        }
    }
}

impl PoolLimits {
    /// Requests that may be in flight at once.
    pub fn capacity(&self) -> usize {
        self.max_connections.min(self.max_requests)
    }

    /// The 503's reason when a request to `service` overflows.
    pub fn overflow_reason(&self, service: &str) -> String {
        format!(
            "too many requests to {service} at once (pool limits: {} connections, {} pending)",
            self.max_connections, self.max_pending
        )
    }
}

/// What a request arriving at the gate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It has a slot: go on (call [`PoolGate::release`] when done).
    Admitted,
    /// It waits at the back of the queue until a release hands it a slot (or it gives
    /// up: [`PoolGate::abandon`]).
    Queued,
    /// The pool is full: refuse it with a 503 (`overflow`), not queued.
    Overflow,
}

/// What a release did with the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The slot passes to the first waiter in the queue: wake it (it is already counted
    /// as active).
    HandedOver,
    /// Nobody waited: the slot is free.
    Freed,
}

/// The pool's counters: requests in flight and requests waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolGate {
    limits: PoolLimits,
    active: usize,
    pending: usize,
}

impl PoolGate {
    pub fn new(limits: PoolLimits) -> Self {
        PoolGate {
            limits,
            active: 0,
            pending: 0,
        }
    }

    pub fn limits(&self) -> PoolLimits {
        self.limits
    }

    /// Requests holding a slot.
    pub fn active(&self) -> usize {
        self.active
    }

    /// Requests waiting for one.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// A request arrives: it takes a slot if one is free and nobody waits before it,
    /// else it queues if the queue has room, else it overflows.
    pub fn admit(&mut self) -> Admission {
        if self.active < self.limits.capacity() && self.pending == 0 {
            self.active += 1;
            return Admission::Admitted;
        }
        if self.pending >= self.limits.max_pending {
            return Admission::Overflow;
        }
        self.pending += 1;
        Admission::Queued
    }

    /// A request holding a slot is done: the slot passes to the first waiter, if any.
    /// (A waiter handed a slot just as it gave up releases it again.)
    pub fn release(&mut self) -> Release {
        if self.pending > 0 {
            self.pending -= 1;
            return Release::HandedOver;
        }
        self.active = self.active.saturating_sub(1);
        Release::Freed
    }

    /// A queued request gave up before it was handed a slot: it leaves the queue.
    pub fn abandon(&mut self) {
        self.pending = self.pending.saturating_sub(1);
    }

    /// New limits apply to new requests; those in flight finish as they are. Returns how
    /// many waiters (from the front of the queue) now get a slot: wake that many.
    pub fn set_limits(&mut self, limits: PoolLimits) -> usize {
        self.limits = limits;
        let mut woken = 0;
        while self.pending > 0 && self.active < self.limits.capacity() {
            self.pending -= 1;
            self.active += 1;
            woken += 1;
        }
        woken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(connections: usize, pending: usize, requests: usize) -> PoolLimits {
        PoolLimits {
            max_connections: connections,
            max_pending: pending,
            max_requests: requests,
        }
    }

    #[test]
    fn the_defaults_are_envoys_1024() {
        assert_eq!(PoolLimits::default(), limits(1024, 1024, 1024));
    }

    #[test]
    fn requests_are_admitted_up_to_the_capacity_then_queue_then_overflow() {
        let mut gate = PoolGate::new(limits(2, 1, 5));
        assert_eq!(gate.admit(), Admission::Admitted);
        assert_eq!(gate.admit(), Admission::Admitted);
        assert_eq!(gate.admit(), Admission::Queued);
        assert_eq!(gate.admit(), Admission::Overflow);
        assert_eq!((gate.active(), gate.pending()), (2, 1));
    }

    #[test]
    fn the_capacity_is_the_smaller_of_connections_and_requests() {
        let mut gate = PoolGate::new(limits(5, 0, 1));
        assert_eq!(gate.admit(), Admission::Admitted);
        assert_eq!(gate.admit(), Admission::Overflow);
    }

    #[test]
    fn a_release_hands_the_slot_to_the_first_waiter() {
        let mut gate = PoolGate::new(limits(1, 2, 1));
        assert_eq!(gate.admit(), Admission::Admitted);
        assert_eq!(gate.admit(), Admission::Queued);
        assert_eq!(gate.release(), Release::HandedOver);
        assert_eq!((gate.active(), gate.pending()), (1, 0));
        assert_eq!(gate.release(), Release::Freed);
        assert_eq!((gate.active(), gate.pending()), (0, 0));
    }

    #[test]
    fn a_new_request_queues_behind_the_waiters() {
        let mut gate = PoolGate::new(limits(1, 5, 1));
        assert_eq!(gate.admit(), Admission::Admitted);
        assert_eq!(gate.admit(), Admission::Queued);
        assert_eq!(gate.admit(), Admission::Queued);
        assert_eq!(gate.release(), Release::HandedOver);
        assert_eq!(gate.admit(), Admission::Queued);
        assert_eq!((gate.active(), gate.pending()), (1, 2));
    }

    #[test]
    fn a_waiter_giving_up_leaves_the_queue() {
        let mut gate = PoolGate::new(limits(1, 1, 1));
        gate.admit();
        assert_eq!(gate.admit(), Admission::Queued);
        assert_eq!(gate.admit(), Admission::Overflow);
        gate.abandon();
        assert_eq!(gate.pending(), 0);
        assert_eq!(gate.admit(), Admission::Queued);
    }

    #[test]
    fn raised_limits_wake_as_many_waiters_as_now_fit() {
        let mut gate = PoolGate::new(limits(1, 10, 1));
        gate.admit();
        for _ in 0..4 {
            assert_eq!(gate.admit(), Admission::Queued);
        }
        assert_eq!(gate.set_limits(limits(3, 10, 3)), 2);
        assert_eq!((gate.active(), gate.pending()), (3, 2));
        assert_eq!(gate.set_limits(limits(1, 10, 1)), 0); // in flight finish as they are
        assert_eq!((gate.active(), gate.pending()), (3, 2));
    }

    #[test]
    fn the_overflow_reason_names_the_limits() {
        assert_eq!(
            limits(10, 5, 99).overflow_reason("catalog"),
            "too many requests to catalog at once (pool limits: 10 connections, 5 pending)"
        );
    }
}
