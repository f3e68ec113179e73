//! Periodic schedules, without SQL: a cron pattern read in its time zone,
//! and which ticks one firing enqueues. Every backend and every process
//! computes ticks the same way from the stored pattern, so they agree on
//! what the tick is, and a tick is the key that makes its enqueue happen
//! once (see `Storage::fire_periodic`).

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use crate::error::{Error, Result};
use crate::job::{micros, JobOptions, Micros};

/// Ticks are stored this far ahead of their time, as delayed jobs: the
/// worker that stores one announces its due time, and idle workers of every
/// process wake for it, so the tick runs on time however late the
/// maintenance thread looks.
pub const LOOKAHEAD: Duration = Duration::from_secs(1);

/// A tick that no worker stored until this long after its time was missed
/// (no worker ran, or every one was stalled): `CatchUp` decides whether it
/// runs. Below it, a tick is merely late and runs as any other.
pub const MISSED_AFTER: Duration = Duration::from_secs(1);

const SECOND: Micros = 1_000_000;

/// Most ticks of one schedule enqueued by one firing: a long backlog under
/// `CatchUp::All` goes in several transactions, not one huge one.
pub const MAX_TICKS_PER_FIRING: usize = 1000;

/// What happens to ticks missed while no worker ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// One run for all of them (the latest), then the schedule goes on.
    One,
    /// One run per missed tick, oldest first.
    All,
    /// None of them run; the schedule goes on from its next tick.
    Skip,
}

impl CatchUp {
    pub fn parse(text: &str) -> Result<CatchUp> {
        match text {
            "one" => Ok(CatchUp::One),
            "all" => Ok(CatchUp::All),
            "none" => Ok(CatchUp::Skip),
            other => Err(Error::invalid(format!(
                "catch_up must be \"one\", \"all\" or \"none\", got {other:?}"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CatchUp::One => "one",
            CatchUp::All => "all",
            CatchUp::Skip => "none",
        }
    }
}

/// A cron pattern (5 fields, or 6 with seconds first) in an IANA time zone.
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

impl Schedule {
    /// Parses `pattern` in `timezone`; the error names the field at fault
    /// (`cron` or `timezone`). A pattern that never fires (the 30th of
    /// February) is refused too.
    pub fn parse(pattern: &str, timezone: &str) -> Result<Schedule> {
        let zone: Tz = timezone.parse().map_err(|_| {
            Error::invalid(format!(
                "timezone {timezone:?} is not an IANA time zone name (such as \"UTC\" or \
                 \"Europe/Paris\")"
            ))
        })?;
        let fields = pattern.split_whitespace().count();
        let nickname = pattern.trim_start().starts_with('@');
        if !nickname && !(5..=6).contains(&fields) {
            return Err(Error::invalid(format!(
                "cron {pattern:?} has {fields} field(s): expected 5 (minute hour day-of-month \
                 month day-of-week) or 6 (a leading seconds field)"
            )));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(pattern)
            .map_err(|e| Error::invalid(format!("cron {pattern:?} is not a cron pattern: {e}")))?;
        let schedule = Schedule { cron, zone };
        if schedule.next_after(crate::job::now_micros()).is_none() {
            return Err(Error::invalid(format!(
                "cron {pattern:?} never fires (in {timezone})"
            )));
        }
        Ok(schedule)
    }

    /// The first tick strictly after `after`, if there is one.
    pub fn next_after(&self, after: Micros) -> Option<Micros> {
        // Ticks fall on whole seconds; the search keeps the start's fraction.
        let start = self.at(after.div_euclid(SECOND) * SECOND)?;
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|tick| tick.timestamp_micros())
    }

    /// The last tick strictly before `before`, if there is one.
    fn last_before(&self, before: Micros) -> Option<Micros> {
        let start = self.at((before.saturating_add(SECOND - 1)).div_euclid(SECOND) * SECOND)?;
        self.cron
            .find_previous_occurrence(&start, false)
            .ok()
            .map(|tick| tick.timestamp_micros())
    }

    fn at(&self, instant: Micros) -> Option<DateTime<Tz>> {
        Utc.timestamp_micros(instant)
            .single()
            .map(|t| t.with_timezone(&self.zone))
    }
}

/// What one firing of a schedule does.
#[derive(Clone, Debug, PartialEq)]
pub struct TickPlan {
    /// Ticks to enqueue now, oldest first: each is its job's due time.
    pub ticks: Vec<Micros>,
    /// The first tick not enqueued, stored as the schedule's next tick
    /// (`i64::MAX` when the pattern never fires again).
    pub next_tick: Micros,
}

/// Which ticks a firing at `now` enqueues, starting from `next_tick`, the
/// first tick not yet enqueued: every tick up to `now + LOOKAHEAD`, except
/// that ticks missed (due more than `MISSED_AFTER` before `now`) follow
/// `catch_up`. At most `MAX_TICKS_PER_FIRING`.
pub fn plan_ticks(
    schedule: &Schedule,
    next_tick: Micros,
    now: Micros,
    catch_up: CatchUp,
) -> TickPlan {
    let horizon = now.saturating_add(micros(LOOKAHEAD));
    let missed_before = now.saturating_sub(micros(MISSED_AFTER));
    let never = i64::MAX;
    let following = |tick: Micros| schedule.next_after(tick).unwrap_or(never);
    let mut ticks = Vec::new();
    let mut tick = next_tick;
    if tick < missed_before {
        match catch_up {
            CatchUp::All => {
                while tick < missed_before && ticks.len() < MAX_TICKS_PER_FIRING {
                    ticks.push(tick);
                    tick = following(tick);
                }
            }
            CatchUp::One => {
                let latest = schedule
                    .last_before(missed_before)
                    .unwrap_or(tick)
                    .max(tick);
                ticks.push(latest);
                tick = following(latest);
            }
            CatchUp::Skip => tick = following(missed_before - 1),
        }
    }
    while tick <= horizon && ticks.len() < MAX_TICKS_PER_FIRING {
        ticks.push(tick);
        tick = following(tick);
    }
    TickPlan {
        ticks,
        next_tick: tick,
    }
}

/// A periodic schedule as a worker declares it (the `@queue.periodic` of
/// its app). `options` are the jobs' (task, queue, priority, retries,
/// timeout; `delay` is unused); `payload` their arguments, serialized.
#[derive(Clone, Debug)]
pub struct PeriodicSchedule {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub catch_up: CatchUp,
    pub options: JobOptions,
    pub payload: Vec<u8>,
}

impl PeriodicSchedule {
    pub fn validate(&self) -> Result<Schedule> {
        if self.name.is_empty() {
            return Err(Error::invalid(
                "a periodic schedule's name must not be empty",
            ));
        }
        self.options.validate()?;
        Schedule::parse(&self.cron, &self.timezone)
    }
}

/// A stored schedule, as `Storage::periodic` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct PeriodicRecord {
    pub name: String,
    pub task_name: String,
    pub queue: String,
    pub cron: String,
    pub timezone: String,
    pub catch_up: String,
    /// The first tick not yet stored as a job (the backend.s clock, as
    /// `get_job` shows times).
    pub next_tick: Micros,
    /// The latest tick stored as a job, if any.
    pub last_tick: Option<Micros>,
}

/// What a firing stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FiredTicks {
    /// Jobs stored due now (missed ticks run at once).
    pub ready: usize,
    /// The earliest due time of jobs stored for later (this process's clock).
    pub earliest_due: Option<Micros>,
    /// The earliest next tick of the schedules fired (this process's
    /// clock): the firing to come is `LOOKAHEAD` before it.
    pub next_tick: Option<Micros>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_second() -> Schedule {
        Schedule::parse("* * * * * *", "UTC").unwrap()
    }

    #[test]
    fn five_and_six_fields_tick_on_their_grid() {
        let minutes = Schedule::parse("*/5 * * * *", "UTC").unwrap();
        let t0 = 1_700_000_000 * SECOND; // 22:13:20 UTC
        assert_eq!(minutes.next_after(t0), Some(1_700_000_100 * SECOND)); // 22:15:00
        let seconds = Schedule::parse("*/10 * * * * *", "UTC").unwrap();
        assert_eq!(seconds.next_after(t0), Some((1_700_000_000 + 10) * SECOND));
        assert_eq!(
            seconds.next_after(t0 + 1),
            Some((1_700_000_000 + 10) * SECOND)
        );
    }

    #[test]
    fn a_time_zone_moves_the_wall_clock() {
        let paris = Schedule::parse("0 9 * * *", "Europe/Paris").unwrap();
        let utc = Schedule::parse("0 9 * * *", "UTC").unwrap();
        let t0 = 1_700_000_000 * SECOND; // November: Paris is UTC+1
        assert_eq!(
            utc.next_after(t0).unwrap() - paris.next_after(t0).unwrap(),
            3600 * SECOND
        );
    }

    #[test]
    fn bad_patterns_and_zones_name_their_field() {
        for (cron, zone, field) in [
            ("not a cron", "UTC", "cron"),
            ("* * * *", "UTC", "cron"),
            ("61 * * * *", "UTC", "cron"),
            ("* * * * * * *", "UTC", "cron"),
            ("0 0 30 2 *", "UTC", "cron"),
            ("* * * * *", "Mars/Olympus", "timezone"),
        ] {
            let message = Schedule::parse(cron, zone).err().unwrap().to_string();
            assert!(message.starts_with(field), "{cron:?} {zone:?}: {message}");
        }
        assert!(CatchUp::parse("some").is_err());
    }

    #[test]
    fn on_time_ticks_are_planned_up_to_the_lookahead() {
        let s = every_second();
        let now = 1_700_000_000 * SECOND + SECOND / 2;
        let plan = plan_ticks(&s, 1_700_000_001 * SECOND, now, CatchUp::Skip);
        assert_eq!(plan.ticks, vec![1_700_000_001 * SECOND]);
        assert_eq!(plan.next_tick, 1_700_000_002 * SECOND);
        let again = plan_ticks(&s, plan.next_tick, now, CatchUp::Skip);
        assert!(again.ticks.is_empty(), "nothing twice");
    }

    #[test]
    fn missed_ticks_follow_catch_up() {
        let s = every_second();
        let first_missed = 1_700_000_000 * SECOND;
        let now = first_missed + 10 * SECOND;
        // Missed: ticks before now - 1 s (0..=8); then 9, 10 and 11 are on time.
        let all = plan_ticks(&s, first_missed, now, CatchUp::All);
        assert_eq!(all.ticks.len(), 12);
        assert_eq!(all.ticks[0], first_missed);
        let one = plan_ticks(&s, first_missed, now, CatchUp::One);
        assert_eq!(
            one.ticks,
            [8, 9, 10, 11].map(|n| first_missed + n * SECOND).to_vec()
        );
        let none = plan_ticks(&s, first_missed, now, CatchUp::Skip);
        assert_eq!(
            none.ticks,
            [9, 10, 11].map(|n| first_missed + n * SECOND).to_vec()
        );
        for plan in [all, one, none] {
            assert_eq!(plan.next_tick, first_missed + 12 * SECOND);
        }
    }

    #[test]
    fn a_long_backlog_goes_in_bounded_firings() {
        let s = every_second();
        let start = 1_700_000_000 * SECOND;
        let now = start + 5000 * SECOND;
        let plan = plan_ticks(&s, start, now, CatchUp::All);
        assert_eq!(plan.ticks.len(), MAX_TICKS_PER_FIRING);
        assert_eq!(plan.next_tick, start + 1000 * SECOND);
        let one = plan_ticks(&s, start, now, CatchUp::One);
        assert_eq!(one.ticks[0], now - 2 * SECOND, "the latest missed tick");
    }
}
