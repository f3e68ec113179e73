//! Putting jobs in: validation, delays, and the job claimed on the way in.

use super::*;
use crate::storage::DirectClaim;

#[test]
fn bad_options_are_refused_before_anything_is_written() {
    let s = memory();
    let mut o = opts("");
    assert!(matches!(
        s.enqueue(&o, &payloads(1)),
        Err(Error::InvalidArgument(_))
    ));
    o = opts("t");
    o.retry_backoff = f64::NAN;
    assert!(matches!(
        s.enqueue(&o, &payloads(1)),
        Err(Error::InvalidArgument(_))
    ));
    o = opts("t");
    o.queue = String::new();
    assert!(s.enqueue(&o, &payloads(1)).is_err());
    assert_eq!(s.stats().unwrap(), Stats::default());
}

#[test]
fn enqueue_claimed_claims_only_when_nothing_waits_ahead() {
    let s = memory();
    let claim = DirectClaim {
        worker_id: "local",
        lease: Duration::from_secs(30),
    };
    let (id, job) = s.enqueue_claimed(&opts("t"), b"direct", &claim).unwrap();
    let job = job.expect("claimed at once");
    assert_eq!(
        (job.id, job.attempt, job.token, job.payload.as_slice()),
        (id, 1, 1, &b"direct"[..])
    );
    let rec = s.get_job(id).unwrap().unwrap();
    assert_eq!((rec.state, rec.attempt), (State::Running, 1));
    assert_eq!(rec.worker_id.as_deref(), Some("local"));
    assert!(rec.lease_expires_at.unwrap() > now_micros());
    // Its completion is fenced like any claimed job's.
    assert_eq!(
        s.complete(&[success(&job, b"ok")]).unwrap(),
        vec![Applied::Complete]
    );

    // A job already waiting goes first: the new one is queued behind it.
    let waiting = s.enqueue(&opts("t"), &payloads(1)).unwrap()[0];
    let (queued, none) = s.enqueue_claimed(&opts("t"), b"later", &claim).unwrap();
    assert!(none.is_none());
    assert_eq!(claim_ids(&s), vec![waiting, queued]);

    // A delayed job is never claimed early.
    let mut delayed = opts("t");
    delayed.delay = Some(Duration::from_secs(60));
    let (id, none) = s.enqueue_claimed(&delayed, b"x", &claim).unwrap();
    assert!(none.is_none());
    assert_eq!(state(&s, id), State::Scheduled);
}

#[test]
fn a_delay_past_the_end_of_time_saturates_instead_of_wrapping() {
    let s = memory();
    let mut forever = opts("t");
    forever.delay = Some(Duration::from_secs(u64::MAX / 2));
    let id = s.enqueue(&forever, &payloads(1)).unwrap()[0];
    let job = s.get_job(id).unwrap().unwrap();
    assert_eq!(job.scheduled_at, i64::MAX);
    assert_eq!(job.state, State::Scheduled);
    assert!(claim(&s, 1).is_empty());
}
