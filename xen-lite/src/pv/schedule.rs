//! Round-robin choice of the next domain: pure, so it can be tested on the host.
//!
//! xen-lite preempts a domain when its time slice ([`SLICE_TICKS`] timer ticks) runs out, when
//! it yields, blocks or dies. The next domain is the first runnable one after the current one,
//! wrapping around; if none is runnable but some are blocked, the CPU idles until an event
//! wakes one; if all are dead, the run is over.

use super::domain::State;

/// Timer ticks a domain may run before another runnable domain gets the CPU.
pub const SLICE_TICKS: u64 = 10;

/// What to run next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// This domain (index).
    Domain(usize),
    /// Nothing is runnable yet; wait for an interrupt.
    Idle,
    /// Every domain has ended.
    AllDead,
}

/// The first runnable domain after `current` (round robin), else idle or the end.
pub fn pick_next(states: &[State], current: Option<usize>) -> Next {
    let n = states.len();
    let start = current.map_or(0, |c| c + 1);
    if let Some(next) = (0..n).map(|i| (start + i) % n).find(|&i| states[i] == State::Runnable) {
        Next::Domain(next)
    } else if states.contains(&State::Blocked) {
        Next::Idle
    } else {
        Next::AllDead
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    #[test]
    fn round_robin_skips_the_blocked_and_the_dead() {
        let states = [Runnable, Blocked, Runnable, Dead(0)];
        assert_eq!(pick_next(&states, Some(0)), Next::Domain(2));
        assert_eq!(pick_next(&states, Some(2)), Next::Domain(0));
        assert_eq!(pick_next(&states, None), Next::Domain(0));
        assert_eq!(pick_next(&[Runnable], Some(0)), Next::Domain(0), "alone, it keeps running");
    }

    #[test]
    fn idle_while_someone_sleeps_and_stop_when_all_are_dead() {
        assert_eq!(pick_next(&[Dead(0), Blocked], Some(0)), Next::Idle);
        assert_eq!(pick_next(&[Dead(0), Dead(3)], Some(1)), Next::AllDead);
    }
}
