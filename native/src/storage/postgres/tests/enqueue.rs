//! Putting jobs in: validation, batches, delays, and the job claimed on the
//! way in.

use super::*;
use crate::error::Error;
use crate::job::Stats;
use crate::storage::DirectClaim;

#[test]
fn bad_options_are_refused_before_anything_is_written() {
    let (_scratch, s) = storage!();
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
fn a_batch_goes_in_whole_with_its_options_and_ids_in_order() {
    let (_scratch, s) = storage!();
    let mut o = opts("t");
    o.priority = -3;
    o.queue = "q".into();
    o.max_retries = u32::MAX;
    o.timeout = Some(Duration::from_millis(1500));
    let ids = s.enqueue(&o, &payloads(1000)).unwrap();
    assert_eq!(ids.len(), 1000);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "time-ordered");
    let job = s.get_job(ids[999]).unwrap().unwrap();
    assert_eq!(
        (job.state, job.priority, job.queue.as_str(), job.max_retries),
        (State::Ready, -3, "q", u32::MAX)
    );
    assert_eq!(job.timeout, Some(Duration::from_millis(1500)));
    let got = claim(&s, 2000);
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), ids);
    assert_eq!(got[999].payload, b"p999");
}

#[test]
fn an_id_another_process_took_gets_a_new_one() {
    let (scratch, s) = storage!();
    // A row squatting on the next ids this process will hand out.
    let next = crate::job::IDS.next() + 1;
    let mut client = scratch.client();
    let table = format!("\"{}\".jobs", scratch.schema);
    for id in next..next + 64 {
        client
            .execute(
                &format!(
                    "INSERT INTO {table} (id, queue, task_name, status, priority, payload, \
                     created_at, scheduled_at, max_retries, retry_backoff) \
                     VALUES ($1, 'q', 'other', 3, 0, '', now(), now(), 0, 0)"
                ),
                &[&id],
            )
            .unwrap();
    }
    let ids = s.enqueue(&opts("t"), &payloads(3)).unwrap();
    assert_eq!(ids.len(), 3);
    for (i, id) in ids.iter().enumerate() {
        assert!(!(next..next + 64).contains(id), "{id} was taken");
        let payload: Vec<u8> = client
            .query_one(&format!("SELECT payload FROM {table} WHERE id = $1"), &[id])
            .unwrap()
            .get(0);
        assert_eq!(payload, format!("p{i}").into_bytes());
    }
}

#[test]
fn enqueue_claimed_claims_only_when_nothing_waits_ahead() {
    let (_scratch, s) = storage!();
    let claim_for = DirectClaim {
        worker_id: "local",
        lease: Duration::from_secs(30),
    };
    let (id, job) = s
        .enqueue_claimed(&opts("t"), b"direct", &claim_for)
        .unwrap();
    let job = job.expect("claimed at once");
    assert_eq!(
        (job.id, job.attempt, job.token, job.payload.as_slice()),
        (id, 1, 1, &b"direct"[..])
    );
    let rec = s.get_job(id).unwrap().unwrap();
    assert_eq!((rec.state, rec.attempt), (State::Running, 1));
    assert_eq!(rec.worker_id.as_deref(), Some("local"));
    assert!(rec.lease_expires_at.unwrap() > rec.created_at + 29_000_000);
    assert_eq!(
        s.complete(&[success(&job, b"ok")]).unwrap(),
        vec![Applied::Complete]
    );

    let waiting = s.enqueue(&opts("t"), &payloads(1)).unwrap()[0];
    let (queued, none) = s.enqueue_claimed(&opts("t"), b"later", &claim_for).unwrap();
    assert!(none.is_none());
    assert_eq!(claim_ids(&s), vec![waiting, queued]);

    let mut delayed = opts("t");
    delayed.delay = Some(Duration::from_secs(60));
    let (id, none) = s.enqueue_claimed(&delayed, b"x", &claim_for).unwrap();
    assert!(none.is_none());
    assert_eq!(state(&s, id), State::Scheduled);
}

#[test]
fn a_delay_past_the_end_of_time_saturates_instead_of_wrapping() {
    let (_scratch, s) = storage!();
    let mut forever = opts("t");
    forever.delay = Some(Duration::from_secs(u64::MAX / 2));
    let id = s.enqueue(&forever, &payloads(1)).unwrap()[0];
    let job = s.get_job(id).unwrap().unwrap();
    assert_eq!(job.scheduled_at, i64::MAX);
    assert_eq!(job.state, State::Scheduled);
    assert!(claim(&s, 1).is_empty());
}
