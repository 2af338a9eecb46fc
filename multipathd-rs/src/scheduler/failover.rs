//! Per-path fail / reinstate decisions and per-map failback (path group switching).
//!
//! Path groups are numbered from 0 here, in table order; dm's `switch_group` message counts
//! from 1, so the daemon sends `switch_group <index + 1>`.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::checker::CheckState;

/// The kernel's view of a path in a map's status line (`A` or `F`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DmPathState {
    Active,
    Failed,
}

/// What to do with one path after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathAction {
    /// Nothing: the kernel's view matches the check (or the check had no verdict).
    Keep,
    /// The kernel still uses a path that checks bad: `fail_path`.
    FailPath,
    /// The kernel has failed a path that checks good again: `reinstate_path`.
    ReinstatePath,
}

/// Compares a check result with the kernel's state of the path.
///
/// `Down` and `Timeout` fail an active path; `Up` and `Ghost` reinstate a failed one;
/// `Pending` never changes anything.
pub fn path_action(dm: DmPathState, check: CheckState) -> PathAction {
    match (dm, check) {
        (DmPathState::Active, state) if state.is_failed() => PathAction::FailPath,
        (DmPathState::Failed, state) if state.is_usable() => PathAction::ReinstatePath,
        _ => PathAction::Keep,
    }
}

/// The `failback` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failback {
    /// Switch to the best group as soon as it has a usable path.
    Immediate,
    /// Never switch back automatically (only failover away from a dead group).
    Manual,
    /// Switch back only when a reinstated path is the first usable path of the best group
    /// (so hosts sharing a LUN do not fight over the active group).
    Followover,
    /// Switch back once the best group has been usable for this long.
    Deferred(Duration),
}

impl fmt::Display for Failback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failback::Immediate => f.write_str("immediate"),
            Failback::Manual => f.write_str("manual"),
            Failback::Followover => f.write_str("followover"),
            Failback::Deferred(d) => write!(f, "{}", d.as_secs()),
        }
    }
}

impl FromStr for Failback {
    type Err = String;

    /// `immediate`, `manual`, `followover` or a number of seconds (`0` means immediate).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "immediate" => Ok(Failback::Immediate),
            "manual" => Ok(Failback::Manual),
            "followover" => Ok(Failback::Followover),
            other => match other.parse::<u64>() {
                Ok(0) => Ok(Failback::Immediate),
                Ok(secs) => Ok(Failback::Deferred(Duration::from_secs(secs))),
                Err(_) => Err(format!(
                    "failback \"{other}\" is not immediate, manual, followover or a number of seconds"
                )),
            },
        }
    }
}

/// What a map's path group looks like to the failback decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupStatus {
    /// The group priority (the daemon's choice; multipath-tools uses the mean priority of
    /// the group's usable paths, see [`group_priority`]).
    pub priority: u32,
    /// Paths of the group that are usable (`Up` or `Ghost` and not failed in the kernel).
    pub usable_paths: usize,
}

/// The mean of the priorities of a group's usable paths (0 for a group with none).
pub fn group_priority(usable_path_priorities: &[u32]) -> u32 {
    let count = usable_path_priorities.len() as u64;
    if count == 0 {
        return 0;
    }
    let sum: u64 = usable_path_priorities.iter().map(|&p| u64::from(p)).sum();
    u32::try_from(sum / count).unwrap_or(u32::MAX)
}

/// The highest-priority group with a usable path; ties go to the earlier group.
pub fn best_group(groups: &[GroupStatus]) -> Option<usize> {
    groups
        .iter()
        .enumerate()
        .filter(|(_, g)| g.usable_paths > 0)
        .max_by(|(ia, a), (ib, b)| a.priority.cmp(&b.priority).then(ib.cmp(ia)))
        .map(|(i, _)| i)
}

/// A map's group decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupAction {
    Keep,
    /// Make this group (0-based) the active one: `switch_group <index + 1>`.
    SwitchGroup(usize),
}

/// What happened to the map since the last decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailbackInput<'a> {
    /// The map's groups in table order.
    pub groups: &'a [GroupStatus],
    /// The group the kernel uses now (0-based).
    pub active: usize,
    /// A path was just reinstated and is the first usable path of this group (followover).
    pub first_path_returned_in: Option<usize>,
}

/// Per-map failback memory (the deferred-failback timer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailbackState {
    waiting_for: Option<(usize, Instant)>,
}

impl FailbackState {
    pub fn new() -> Self {
        FailbackState::default()
    }

    /// When a deferred failback will fire, if one is counting down.
    pub fn deferred_until(&self, policy: Failback) -> Option<Instant> {
        match (policy, self.waiting_for) {
            (Failback::Deferred(delay), Some((_, since))) => Some(since + delay),
            _ => None,
        }
    }

    /// Decides whether to switch the map's active group.
    ///
    /// Failover comes first and ignores the policy: if the active group has no usable path
    /// and another has, switch to the best one. Otherwise the policy decides whether to fail
    /// back to a better group than the active one.
    pub fn decide(
        &mut self,
        policy: Failback,
        input: FailbackInput<'_>,
        now: Instant,
    ) -> GroupAction {
        let Some(best) = best_group(input.groups) else {
            self.waiting_for = None;
            return GroupAction::Keep;
        };
        if best == input.active {
            self.waiting_for = None;
            return GroupAction::Keep;
        }
        let active_usable = input
            .groups
            .get(input.active)
            .is_some_and(|g| g.usable_paths > 0);
        if !active_usable {
            self.waiting_for = None;
            return GroupAction::SwitchGroup(best);
        }
        let active_priority = input.groups.get(input.active).map_or(0, |g| g.priority);
        let best_priority = input.groups.get(best).map_or(0, |g| g.priority);
        if best_priority <= active_priority {
            self.waiting_for = None;
            return GroupAction::Keep;
        }
        match policy {
            Failback::Immediate => GroupAction::SwitchGroup(best),
            Failback::Manual => GroupAction::Keep,
            Failback::Followover => {
                if input.first_path_returned_in == Some(best) {
                    GroupAction::SwitchGroup(best)
                } else {
                    GroupAction::Keep
                }
            }
            Failback::Deferred(delay) => {
                let since = match self.waiting_for {
                    Some((group, since)) if group == best => since,
                    _ => {
                        self.waiting_for = Some((best, now));
                        now
                    }
                };
                if now.saturating_duration_since(since) >= delay {
                    self.waiting_for = None;
                    GroupAction::SwitchGroup(best)
                } else {
                    GroupAction::Keep
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn g(priority: u32, usable_paths: usize) -> GroupStatus {
        GroupStatus {
            priority,
            usable_paths,
        }
    }

    fn input(groups: &[GroupStatus], active: usize) -> FailbackInput<'_> {
        FailbackInput {
            groups,
            active,
            first_path_returned_in: None,
        }
    }

    #[test]
    fn path_actions() {
        use CheckState::*;
        use DmPathState::*;
        assert_eq!(path_action(Active, Down), PathAction::FailPath);
        assert_eq!(path_action(Active, Timeout), PathAction::FailPath);
        assert_eq!(path_action(Active, Up), PathAction::Keep);
        assert_eq!(path_action(Active, Ghost), PathAction::Keep);
        assert_eq!(path_action(Active, Pending), PathAction::Keep);
        assert_eq!(path_action(Failed, Up), PathAction::ReinstatePath);
        assert_eq!(path_action(Failed, Ghost), PathAction::ReinstatePath);
        assert_eq!(path_action(Failed, Down), PathAction::Keep);
        assert_eq!(path_action(Failed, Pending), PathAction::Keep);
    }

    #[test]
    fn failback_parsing() {
        assert_eq!("immediate".parse(), Ok(Failback::Immediate));
        assert_eq!("manual".parse(), Ok(Failback::Manual));
        assert_eq!("followover".parse(), Ok(Failback::Followover));
        assert_eq!(
            "30".parse(),
            Ok(Failback::Deferred(Duration::from_secs(30)))
        );
        assert_eq!("0".parse(), Ok(Failback::Immediate));
        assert!("sometimes".parse::<Failback>().is_err());
        assert_eq!(Failback::Deferred(Duration::from_secs(7)).to_string(), "7");
    }

    #[test]
    fn priorities_and_best_group() {
        assert_eq!(group_priority(&[50, 10]), 30);
        assert_eq!(group_priority(&[]), 0);
        assert_eq!(best_group(&[g(10, 2), g(50, 2)]), Some(1));
        assert_eq!(best_group(&[g(10, 2), g(50, 0)]), Some(0));
        assert_eq!(
            best_group(&[g(50, 1), g(50, 1)]),
            Some(0),
            "tie: earlier group"
        );
        assert_eq!(best_group(&[g(50, 0), g(10, 0)]), None);
    }

    #[test]
    fn failover_ignores_the_policy() {
        let clock = ManualClock::new();
        for policy in [
            Failback::Immediate,
            Failback::Manual,
            Failback::Followover,
            Failback::Deferred(Duration::from_secs(60)),
        ] {
            let mut state = FailbackState::new();
            let groups = [g(50, 0), g(10, 2)];
            assert_eq!(
                state.decide(policy, input(&groups, 0), clock.now()),
                GroupAction::SwitchGroup(1),
                "{policy}"
            );
        }
    }

    #[test]
    fn immediate_and_manual() {
        let clock = ManualClock::new();
        let groups = [g(50, 1), g(10, 2)];
        let mut state = FailbackState::new();
        assert_eq!(
            state.decide(Failback::Immediate, input(&groups, 1), clock.now()),
            GroupAction::SwitchGroup(0)
        );
        assert_eq!(
            state.decide(Failback::Manual, input(&groups, 1), clock.now()),
            GroupAction::Keep
        );
        assert_eq!(
            state.decide(Failback::Immediate, input(&groups, 0), clock.now()),
            GroupAction::Keep,
            "already on the best group"
        );
    }

    #[test]
    fn followover_needs_the_first_returning_path() {
        let clock = ManualClock::new();
        let groups = [g(50, 1), g(10, 2)];
        let mut state = FailbackState::new();
        // The better group has paths but none just returned (e.g. another host moved the LUN):
        // stay.
        assert_eq!(
            state.decide(Failback::Followover, input(&groups, 1), clock.now()),
            GroupAction::Keep
        );
        let returned = FailbackInput {
            first_path_returned_in: Some(0),
            ..input(&groups, 1)
        };
        assert_eq!(
            state.decide(Failback::Followover, returned, clock.now()),
            GroupAction::SwitchGroup(0)
        );
    }

    #[test]
    fn deferred_failback_waits_on_the_clock() {
        let clock = ManualClock::new();
        let policy = Failback::Deferred(Duration::from_secs(10));
        let groups = [g(50, 1), g(10, 2)];
        let mut state = FailbackState::new();
        assert_eq!(
            state.decide(policy, input(&groups, 1), clock.now()),
            GroupAction::Keep
        );
        assert_eq!(
            state.deferred_until(policy),
            Some(clock.now() + Duration::from_secs(10))
        );
        clock.advance(Duration::from_secs(9));
        assert_eq!(
            state.decide(policy, input(&groups, 1), clock.now()),
            GroupAction::Keep
        );
        // The better group loses its path: the timer resets.
        let lost = [g(50, 0), g(10, 2)];
        assert_eq!(
            state.decide(policy, input(&lost, 1), clock.now()),
            GroupAction::Keep
        );
        assert_eq!(state.deferred_until(policy), None);
        clock.advance(Duration::from_secs(2));
        assert_eq!(
            state.decide(policy, input(&groups, 1), clock.now()),
            GroupAction::Keep
        );
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            state.decide(policy, input(&groups, 1), clock.now()),
            GroupAction::SwitchGroup(0)
        );
        assert_eq!(state.deferred_until(policy), None);
    }
}
