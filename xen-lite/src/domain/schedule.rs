//! Who runs next: one decision for every mode ([`Domains::schedule`]), round robin.
//!
//! xen-lite preempts a domain when its time slice ([`SLICE_TICKS`] timer ticks) runs out, when
//! it yields, blocks or dies. The next domain is the first runnable one after the current one,
//! wrapping around ([`pick_next`], pure, so it is tested on the host); if none is runnable but
//! some are blocked, the CPU idles until an event wakes one, and a blocked domain that nothing
//! can ever wake is killed; if all are dead, the run is over. What a switch means for the CPU
//! (load another trap frame, or another VMCS) is the mode's business; the decision is made here.

use super::{Domains, State};

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

/// What [`Domains::schedule`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The current domain goes on.
    Stay(usize),
    /// `to` runs next, instead of `from` (`None`: the CPU was idle); it is already
    /// [`Domains::current`].
    Switch {
        /// Who ran before.
        from: Option<usize>,
        /// Who runs now.
        to: usize,
    },
    /// Nothing can run now; every blocked domain can still be woken.
    Idle,
}

impl Domains {
    /// Decides who runs next. `can_wake(domains, index)` says whether blocked domain `index`
    /// can ever be woken (by a timer, an interrupt, another domain); one that cannot is killed
    /// with `forever` as the reason when the CPU would otherwise idle. Ends the run when no
    /// domain is left.
    #[inline]
    pub fn schedule(
        &mut self,
        can_wake: impl Fn(&Domains, usize) -> bool,
        forever: &str,
    ) -> Decision {
        if let Some(c) = self.current {
            let domain = self.domain(c);
            if domain.state == State::Runnable && !self.yield_now && self.slice_left > 0 {
                return Decision::Stay(c);
            }
        }
        self.reschedule(can_wake, forever)
    }

    /// [`Domains::schedule`] when the current domain cannot or should not go on.
    fn reschedule(
        &mut self,
        can_wake: impl Fn(&Domains, usize) -> bool,
        forever: &str,
    ) -> Decision {
        let states: [State; crate::config::MAX_DOMAINS] =
            core::array::from_fn(|i| self.domains[i].as_ref().map_or(State::Dead(0), |d| d.state));
        self.yield_now = false;
        self.slice_left = SLICE_TICKS;
        match pick_next(&states, self.current) {
            Next::Domain(n) if self.current == Some(n) => Decision::Stay(n),
            Next::Domain(n) => {
                let from = self.current.replace(n);
                self.domain(n).stats.schedules += 1;
                super::set_current_for_debuggers(Some(n));
                Decision::Switch { from, to: n }
            }
            Next::Idle => {
                for index in 0..states.len() {
                    if states[index] == State::Blocked && !can_wake(self, index) {
                        super::kill!(self.domain(index), "{forever}");
                    }
                }
                if self.domains.iter().flatten().all(super::Domain::is_dead) {
                    self.finish()
                }
                Decision::Idle
            }
            Next::AllDead => self.finish(),
        }
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
