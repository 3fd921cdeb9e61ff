//! Deadlines of a shard: a timing wheel for the short ones, a heap for the rest.
//!
//! Under load nearly every timer a shard sets is a CoAP exchange timeout (seconds away) that
//! becomes moot when the answer arrives in a millisecond; the shard does not cancel them, it
//! ignores them when they fire. In a binary heap each such timer costs two O(log n) sift
//! operations over tens of thousands of entries (the heap was the first item of a worker's
//! profile at 10,000 commands per second). Here a deadline less than [`SLOTS`] ticks away goes
//! into the slot of its tick, O(1) in and out; only far deadlines use the heap. Registration
//! lifetimes, one per device and a million at once, have a heap of their own with 16-byte entries
//! ([`Expiries`]).
//!
//! Contract: [`Timers::pop_due`] yields exactly the entries whose deadline is `<= now`, each once;
//! within one tick the order is insertion order, across ticks it is deadline order.
//! [`Timers::next_deadline`] is never later than the earliest deadline and at most one tick
//! ([`TICK`]) after it, so a thread sleeping until it wakes at most a tick late, and deadlines
//! that fall into the same tick wake it once.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

pub const TICK: Duration = Duration::from_millis(10);
/// Wheel span: 4096 ticks of 10 ms, about 41 s, enough for every CoAP retransmission timeout.
pub const SLOTS: usize = 4096;

pub struct Timers<T> {
    /// Instant of tick 0: the `now` of the first [`Timers::push`], so no deadline set later lies
    /// before it unless it is already overdue.
    origin: Option<Instant>,
    slots: Vec<Vec<(Instant, T)>>,
    /// Every tick below `cursor` has been emptied; the wheel holds ticks `cursor..cursor+SLOTS`.
    cursor: u64,
    in_wheel: usize,
    /// No non-empty slot below this tick (a lower bound, advanced lazily).
    hint: u64,
    far: BinaryHeap<Reverse<(Instant, T)>>,
    /// Due timers taken out of the wheel, not yet returned.
    ready: VecDeque<T>,
}

impl<T: Ord + Copy> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            origin: None,
            slots: Vec::new(),
            cursor: 0,
            in_wheel: 0,
            hint: u64::MAX,
            far: BinaryHeap::new(),
            ready: VecDeque::new(),
        }
    }
}

impl<T: Ord + Copy> Timers<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The tick whose slot holds `t`: the first tick boundary at or after it.
    fn tick_of(&self, origin: Instant, t: Instant) -> u64 {
        let d = t.saturating_duration_since(origin).as_nanos();
        let tick = TICK.as_nanos();
        d.div_ceil(tick).min(u64::MAX as u128 / 2) as u64
    }

    fn boundary(&self, origin: Instant, tick: u64) -> Instant {
        origin + TICK * tick.min(u32::MAX as u64) as u32
    }

    /// Sets `timer` for `deadline`; `now` is the caller's clock.
    pub fn push(&mut self, now: Instant, deadline: Instant, timer: T) {
        let origin = *self.origin.get_or_insert(now);
        if self.slots.is_empty() {
            self.slots = (0..SLOTS).map(|_| Vec::new()).collect();
        }
        // Overdue deadlines go into the current slot: the next `pop_due` yields them.
        let tick = self.tick_of(origin, deadline).max(self.cursor);
        if tick - self.cursor >= SLOTS as u64 {
            self.far.push(Reverse((deadline, timer)));
            return;
        }
        self.slots[(tick % SLOTS as u64) as usize].push((deadline, timer));
        self.in_wheel += 1;
        self.hint = self.hint.min(tick);
    }

    /// Earliest instant worth waking up for, if any timer is set.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        let far = self.far.peek().map(|Reverse((t, _))| *t);
        let origin = self.origin?;
        if !self.ready.is_empty() {
            return Some(origin);
        }
        if self.in_wheel == 0 {
            return far;
        }
        let mut tick = self.hint.max(self.cursor);
        // Amortised: the scan only passes empty slots the cursor will pass anyway.
        while self.slots[(tick % SLOTS as u64) as usize].is_empty() {
            tick += 1;
        }
        self.hint = tick;
        let wheel = self.boundary(origin, tick);
        Some(far.map_or(wheel, |f| f.min(wheel)))
    }

    /// Removes and returns one timer due at `now`, or `None` when none is left.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        if let Some(t) = self.ready.pop_front() {
            return Some(t);
        }
        if let Some(Reverse((t, timer))) = self.far.peek().copied() {
            if t <= now {
                self.far.pop();
                return Some(timer);
            }
        }
        let origin = self.origin?;
        if self.in_wheel == 0 {
            return None;
        }
        // Ticks wholly in the past are emptied in order, the tick containing `now` of its due
        // entries only, in one pass each into `ready`.
        let now_tick = self.tick_of(origin, now);
        if now_tick > self.cursor + SLOTS as u64 {
            // Asleep longer than the wheel's span: everything in it is due; restart from here.
            self.cursor = now_tick - SLOTS as u64;
        }
        while self.in_wheel > 0 {
            let slot = &mut self.slots[(self.cursor % SLOTS as u64) as usize];
            let before = slot.len();
            if self.cursor < now_tick {
                self.ready.extend(slot.drain(..).map(|(_, t)| t));
            } else {
                let ready = &mut self.ready;
                slot.retain(|&(d, t)| {
                    let due = d <= now;
                    if due {
                        ready.push_back(t);
                    }
                    !due
                });
            }
            self.in_wheel -= before - slot.len();
            if self.cursor >= now_tick {
                break;
            }
            self.cursor += 1;
        }
        self.ready.pop_front()
    }

    pub fn len(&self) -> usize {
        self.in_wheel + self.far.len() + self.ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Far deadlines of one kind, each naming a `u64` (registration lifetimes): a heap of 16-byte
/// entries (nanoseconds since the first `now` pushed, id) where [`Timers`] spends 40 on an
/// `(Instant, T)`. A million registrations keep a million of these.
///
/// Contract: [`Expiries::pop_due`] yields exactly the entries whose deadline is `<= now`, each
/// once, in deadline order; [`Expiries::next_deadline`] is the earliest deadline, exactly.
#[derive(Debug, Default)]
pub struct Expiries {
    origin: Option<Instant>,
    heap: BinaryHeap<Reverse<(u64, u64)>>,
}

impl Expiries {
    /// Room for `n` registrations up front.
    pub fn reserve(&mut self, n: usize) {
        self.heap.reserve(n);
    }

    /// Nanoseconds from the origin; deadlines before it (overdue when set) count as the origin.
    fn offset(origin: Instant, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Sets a deadline for `id`; `now` is the caller's clock.
    pub fn push(&mut self, now: Instant, deadline: Instant, id: u64) {
        let origin = *self.origin.get_or_insert(now);
        self.heap
            .push(Reverse((Self::offset(origin, deadline), id)));
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let origin = self.origin?;
        let Reverse((at, _)) = self.heap.peek()?;
        Some(origin + Duration::from_nanos(*at))
    }

    /// Removes and returns one id due at `now`, or `None` when none is.
    pub fn pop_due(&mut self, now: Instant) -> Option<u64> {
        let origin = self.origin?;
        // Before the origin nothing is due (only a clock going backwards gets here).
        let now = now.checked_duration_since(origin)?;
        let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse((_, id))| id),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(t: &mut Timers<u32>, now: Instant) -> Vec<u32> {
        std::iter::from_fn(|| t.pop_due(now)).collect()
    }

    #[test]
    fn fires_exactly_the_due_timers_once() {
        let t0 = Instant::now();
        let mut t = Timers::new();
        t.push(t0, t0 + Duration::from_millis(5), 1);
        t.push(t0, t0 + Duration::from_millis(25), 2);
        t.push(t0, t0 + Duration::from_secs(100), 3); // beyond the wheel
        t.push(t0, t0 + Duration::from_millis(24), 4);
        assert_eq!(
            drain(&mut t, t0 + Duration::from_millis(4)),
            Vec::<u32>::new()
        );
        assert_eq!(drain(&mut t, t0 + Duration::from_millis(5)), vec![1]);
        assert_eq!(drain(&mut t, t0 + Duration::from_millis(24)), vec![4]);
        assert_eq!(
            drain(&mut t, t0 + Duration::from_millis(24)),
            Vec::<u32>::new()
        );
        assert_eq!(drain(&mut t, t0 + Duration::from_secs(99)), vec![2]);
        assert_eq!(t.len(), 1);
        assert_eq!(drain(&mut t, t0 + Duration::from_secs(100)), vec![3]);
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn next_deadline_is_at_most_a_tick_late_and_never_early() {
        let t0 = Instant::now();
        let mut t = Timers::new();
        // Deadlines set in any order, the farthest first.
        for ms in [60_000u64, 3, 17, 5000, 17, 230] {
            t.push(t0, t0 + Duration::from_millis(ms), ms as u32);
        }
        let mut fired = Vec::new();
        let mut now = t0;
        while let Some(d) = t.next_deadline() {
            assert!(d >= now);
            now = d;
            let due = drain(&mut t, now);
            assert!(!due.is_empty(), "woken at {:?} for nothing", now - t0);
            for ms in due {
                let deadline = t0 + Duration::from_millis(ms as u64);
                assert!(
                    deadline <= now && now - deadline <= TICK,
                    "{ms} fired at {:?}",
                    now - t0
                );
                fired.push(ms);
            }
        }
        assert_eq!(fired, vec![3, 17, 17, 230, 5000, 60_000]);
    }

    #[test]
    fn overdue_and_long_sleeps_fire_everything() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut t = Timers::new();
        t.push(t0, t0, 1);
        t.push(t0, t0 - Duration::from_millis(500), 2); // overdue when set
        t.push(t0, t0 + Duration::from_secs(30), 3);
        // Asleep for ten minutes: far beyond the wheel's span.
        let mut got = drain(&mut t, t0 + Duration::from_secs(600));
        got.sort();
        assert_eq!(got, vec![1, 2, 3]);
        // The wheel keeps working after the jump.
        let later = t0 + Duration::from_secs(600);
        t.push(later, later + Duration::from_millis(15), 4);
        t.push(later, later - Duration::from_secs(1), 5); // overdue when set
        assert_eq!(drain(&mut t, later), vec![5]);
        assert_eq!(drain(&mut t, later + Duration::from_millis(15)), vec![4]);
    }

    #[test]
    fn many_timers_in_random_order_fire_in_tick_order() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let t0 = Instant::now();
        let mut t = Timers::new();
        let mut expect = Vec::new();
        for i in 0..20_000u32 {
            let ms = rng.gen_range(0..120_000u64);
            t.push(t0, t0 + Duration::from_millis(ms), i);
            expect.push((ms, i));
        }
        let mut now = t0;
        let mut fired = Vec::new();
        while let Some(d) = t.next_deadline() {
            now = d.max(now);
            while let Some(i) = t.pop_due(now) {
                fired.push((i, now));
            }
        }
        assert_eq!(fired.len(), expect.len());
        for (i, at) in fired {
            let deadline = t0 + Duration::from_millis(expect[i as usize].0);
            assert!(deadline <= at && at - deadline <= TICK);
        }
    }

    #[test]
    fn expiries_fire_exactly_at_their_deadline_in_order() {
        let t0 = Instant::now();
        let mut e = Expiries::default();
        assert_eq!(e.next_deadline(), None);
        assert_eq!(e.pop_due(t0), None);
        e.push(t0, t0 + Duration::from_secs(86_400), 1);
        e.push(t0, t0 + Duration::from_nanos(1_500_000_001), 2);
        e.push(t0, t0 - Duration::from_secs(1), 3); // overdue when set
        let later = t0 + Duration::from_secs(1);
        e.push(later, later + Duration::from_millis(500), 4);
        assert_eq!(e.next_deadline(), Some(t0));
        assert_eq!(e.pop_due(t0), Some(3));
        assert_eq!(e.pop_due(t0 + Duration::from_millis(1499)), None);
        assert_eq!(e.pop_due(t0 + Duration::from_millis(1500)), Some(4));
        assert_eq!(
            e.next_deadline(),
            Some(t0 + Duration::from_nanos(1_500_000_001))
        );
        assert_eq!(e.pop_due(t0 + Duration::from_millis(1500)), None);
        assert_eq!(e.pop_due(t0 + Duration::from_nanos(1_500_000_001)), Some(2));
        assert_eq!(e.len(), 1);
        assert_eq!(e.pop_due(t0 + Duration::from_secs(86_399)), None);
        assert_eq!(e.pop_due(t0 + Duration::from_secs(86_400)), Some(1));
        assert!(e.is_empty());
        assert_eq!(std::mem::size_of::<Reverse<(u64, u64)>>(), 16);
    }
}
