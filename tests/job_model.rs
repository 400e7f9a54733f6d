//! The Job entity's state machine and value objects.

use memocache::{
    CacheKey, InvalidPriority, Job, JobId, JobPriority, JobResult, JobStatus, JobType, Timestamp,
    WorkerId,
};

/// Every status, in the seed's order.
const STATUSES: [JobStatus; 5] = [
    JobStatus::Queued,
    JobStatus::Processing,
    JobStatus::Completed,
    JobStatus::Failed,
    JobStatus::Cancelled,
];

const T: Timestamp = Timestamp::from_nanos(7);

fn job_in(status: JobStatus) -> Job {
    let mut job = Job::new(JobType::Indexing, &b"payload"[..]);
    match status {
        JobStatus::Queued => {}
        JobStatus::Processing => job.start_processing("w".into(), T).expect("start"),
        JobStatus::Completed => {
            job.start_processing("w".into(), T).expect("start");
            job.complete(b"r".to_vec().into(), T).expect("complete");
        }
        JobStatus::Failed => job.fail("boom".into(), T).expect("fail"),
        JobStatus::Cancelled => job.cancel(T).expect("cancel"),
    }
    assert_eq!(job.status(), status);
    job
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Start,
    Complete,
    CompleteMemoized,
    Fail,
    ScheduleRetry,
    Release,
    Cancel,
    Reopen,
}

impl Op {
    const ALL: [Op; 8] = [
        Op::Start,
        Op::Complete,
        Op::CompleteMemoized,
        Op::Fail,
        Op::ScheduleRetry,
        Op::Release,
        Op::Cancel,
        Op::Reopen,
    ];

    fn apply(self, job: &mut Job) -> Result<(), memocache::InvalidStateTransition> {
        match self {
            Op::Start => job.start_processing("w2".into(), T),
            Op::Complete => job.complete(b"x".to_vec().into(), T),
            Op::CompleteMemoized => job.complete_memoized(b"x".to_vec().into(), T),
            Op::Fail => job.fail("err".into(), T),
            Op::ScheduleRetry => job.schedule_retry("err".into()),
            Op::Release => job.release(),
            Op::Cancel => job.cancel(T),
            Op::Reopen => job.reopen(),
        }
    }

    /// The table from the module docs: the allowed source statuses and the target.
    fn rule(self) -> (&'static [JobStatus], JobStatus) {
        use JobStatus::*;
        match self {
            Op::Start => (&[Queued], Processing),
            Op::Complete => (&[Processing], Completed),
            Op::CompleteMemoized => (&[Queued], Completed),
            Op::Fail => (&[Queued, Processing], Failed),
            Op::ScheduleRetry => (&[Processing], Queued),
            Op::Release => (&[Processing], Queued),
            Op::Cancel => (&[Queued, Processing], Cancelled),
            Op::Reopen => (&[Failed], Queued),
        }
    }
}

#[test]
fn whole_transition_table() {
    let statuses = STATUSES;
    for op in Op::ALL {
        let (from, to) = op.rule();
        for status in statuses {
            let mut job = job_in(status);
            let before = format!("{job:?}");
            match op.apply(&mut job) {
                Ok(()) => {
                    assert!(from.contains(&status), "{op:?} from {status} was allowed");
                    assert_eq!(job.status(), to, "{op:?} from {status}");
                }
                Err(e) => {
                    assert!(!from.contains(&status), "{op:?} from {status} refused: {e}");
                    assert_eq!((e.from, e.to, e.job), (status, to, job.id()));
                    assert_eq!(
                        format!("{job:?}"),
                        before,
                        "a refused {op:?} changed the job"
                    );
                    let message = e.to_string();
                    assert!(message.contains(&status.to_string()), "{message}");
                    assert!(message.contains(&to.to_string()), "{message}");
                }
            }
        }
    }
}

#[test]
fn schedule_retry_requires_can_retry() {
    let mut job = Job::new(JobType::Translation, &b""[..]).with_max_retries(1);
    job.start_processing("w".into(), T).expect("start");
    assert!(job.can_retry());
    job.schedule_retry("first".into())
        .expect("one retry allowed");
    assert_eq!(
        (job.retry_count(), job.status(), job.error_message()),
        (1, JobStatus::Queued, Some("first"))
    );
    assert_eq!(job.worker_id(), None);
    assert_eq!(job.started_at(), None);
    job.start_processing("w".into(), T).expect("start again");
    assert!(!job.can_retry());
    let err = job
        .schedule_retry("second".into())
        .expect_err("no retries left");
    assert_eq!(
        (err.from, err.to),
        (JobStatus::Processing, JobStatus::Queued)
    );
    assert_eq!(job.retry_count(), 1);
    // Reopening a dead letter restores the budget.
    job.fail("second".into(), T).expect("fail");
    job.reopen().expect("reopen");
    assert_eq!((job.retry_count(), job.can_retry()), (0, true));
    assert_eq!(job.completed_at(), None);
}

#[test]
fn release_does_not_count_a_retry() {
    let mut job = Job::new(JobType::Translation, &b""[..]).with_max_retries(0);
    job.start_processing("w".into(), T).expect("start");
    job.release().expect("release");
    assert_eq!((job.status(), job.retry_count()), (JobStatus::Queued, 0));
}

#[test]
fn domain_fields_follow_the_seed() {
    let mut job = Job::new(JobType::Summarization, &b"in"[..]).with_priority(JobPriority::High);
    assert_eq!(job.max_retries(), memocache::job::DEFAULT_MAX_RETRIES);
    job.start_processing(WorkerId::new("worker-9"), Timestamp::from_nanos(10))
        .expect("start");
    assert_eq!(job.worker_id().map(WorkerId::as_str), Some("worker-9"));
    assert_eq!(job.started_at(), Some(Timestamp::from_nanos(10)));
    job.complete(b"out".to_vec().into(), Timestamp::from_nanos(20))
        .expect("complete");
    assert_eq!(job.completed_at(), Some(Timestamp::from_nanos(20)));
    assert_eq!(
        job.result().map(|r| r.as_bytes().as_ref()),
        Some(&b"out"[..])
    );
    assert!(job.status().is_terminal());
    // Identity equality.
    let mut copy = job.clone();
    assert_eq!(copy, job);
    copy.reopen()
        .expect_err("completed jobs cannot be reopened");
    assert_ne!(Job::new(JobType::Summarization, &b"in"[..]), job);
}

#[test]
fn value_objects() {
    assert_eq!(JobPriority::try_from(1), Ok(JobPriority::Low));
    assert_eq!(JobPriority::try_from(3), Ok(JobPriority::High));
    assert_eq!(JobPriority::try_from(0), Err(InvalidPriority(0)));
    assert_eq!(JobPriority::try_from(4), Err(InvalidPriority(4)));
    assert!(JobPriority::High > JobPriority::Medium && JobPriority::Medium > JobPriority::Low);
    assert_eq!(JobPriority::High.value(), 3);

    let terminal: Vec<_> = STATUSES.map(JobStatus::is_terminal).to_vec();
    assert_eq!(terminal, [false, false, true, true, true]);

    let id = JobId::generate();
    assert_ne!(id, JobId::generate());
    let parsed: JobId = id.to_string().parse().expect("round trip");
    assert_eq!(parsed, id);
    assert_eq!(parsed.as_uuid().get_version_num(), 4);
    let err = "xyz".parse::<JobId>().expect_err("not a uuid");
    assert!(err.to_string().contains("xyz"));

    // Malformed UUIDs are refused: a bad digit, one digit short or long, a misplaced
    // hyphen, nothing at all.
    let text = id.to_string();
    let bad_digit = format!("g{}", &text[1..]);
    let short = &text[..text.len() - 1];
    let long = format!("{text}0");
    let hyphen = format!("{}-{}", &text[..7], &text[9..]);
    for bad in [bad_digit.as_str(), short, &long, &hyphen, ""] {
        assert!(bad.parse::<JobId>().is_err(), "{bad:?}");
    }
    // The other spellings of the same UUID name the same job; it displays as hyphenated
    // lower case.
    let simple = text.replace('-', "");
    for other in [
        text.to_uppercase(),
        simple,
        format!("{{{text}}}"),
        format!("urn:uuid:{text}"),
    ] {
        let parsed: JobId = other.parse().expect("a spelling of a UUID");
        assert_eq!((parsed, parsed.to_string()), (id, text.clone()), "{other}");
    }
    assert_eq!(
        JobPriority::try_from(u8::MAX),
        Err(InvalidPriority(u8::MAX))
    );
    // Nothing is trimmed or half-accepted: surrounding whitespace, a trailing newline (a line
    // read from a file), an unbalanced or misplaced brace, a braced URN.
    for bad in [
        format!(" {text}"),
        format!("{text}\n"),
        format!("{{{text}"),
        format!("{text}}}"),
        format!("urn:uuid:{{{text}}}"),
    ] {
        let err = bad.parse::<JobId>().expect_err("not a UUID spelling");
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
}

/// A job id is a version-4 UUID: a well-formed UUID of another version or variant names no job
/// and is refused with an error that says which it is.
#[test]
fn job_ids_of_other_uuid_versions_are_refused() {
    for (text, says) in [
        ("00000000-0000-0000-0000-000000000000", "the nil UUID"),
        ("ffffffff-ffff-ffff-ffff-ffffffffffff", "variant"),
        ("6ba7b810-9dad-11d1-80b4-00c04fd430c8", "version 1"),
        ("a3bb189e-8bf9-3888-9912-ace4e6543002", "version 3"),
        ("017f22e2-79b0-7cc3-98c4-dc0c0c07398f", "version 7"),
        ("6ba7b810-9dad-41d1-00b4-00c04fd430c8", "variant"),
    ] {
        let err = text.parse::<JobId>().expect_err(text);
        let message = err.to_string();
        assert!(
            message.contains(text) && message.contains(says),
            "{text}: {message}"
        );
        assert!(message.contains("version 4"), "{message}");
    }
    let v4 = "6ba7b810-9dad-41d1-80b4-00c04fd430c8";
    assert_eq!(v4.parse::<JobId>().expect("v4").to_string(), v4);
}

/// Full jitter at the largest attempt number, for every backoff: never above the seed's delay
/// (itself capped), never a panic, also with a cap too long for nanoseconds in a `u64`.
#[test]
fn jitter_at_the_largest_attempt_stays_within_the_delay() {
    use memocache::{Backoff, RetryConfig};
    use std::time::Duration;
    let ms = Duration::from_millis(1);
    for backoff in [Backoff::Exponential, Backoff::Linear, Backoff::Fixed] {
        for max in [Duration::from_secs(60), Duration::MAX] {
            let retry = RetryConfig::new(3, backoff, ms, max)
                .expect("valid")
                .with_full_jitter(true);
            let delay = retry.calculate_delay(u32::MAX);
            let want = match backoff {
                Backoff::Exponential => max,
                Backoff::Linear => (ms * u32::MAX + ms).min(max),
                Backoff::Fixed => ms,
            };
            assert_eq!(delay, want, "{backoff:?} up to {max:?}");
            for _ in 0..50 {
                let waited = retry.retry_delay(u32::MAX);
                assert!(waited <= delay, "{backoff:?}: {waited:?} > {delay:?}");
            }
        }
    }
}

#[test]
fn memo_keys() {
    let hash = "ab".repeat(32);
    let job = Job::transcription(&hash, "en", &b"audio"[..]).expect("valid");
    assert_eq!(job.job_type(), JobType::Transcription);
    assert_eq!(
        job.memo_key(),
        Some(&CacheKey::transcript(&hash, "en").expect("valid"))
    );
    assert!(Job::transcription("nothex", "en", &b""[..]).is_err());
    assert!(Job::transcription(&hash, "", &b""[..]).is_err());

    let a = Job::keyed(JobType::Summarization, ["doc", "v2"], &b""[..]).expect("valid");
    let b = Job::keyed(JobType::Summarization, ["do", "cv2"], &b""[..]).expect("valid");
    let want = CacheKey::builder("summary")
        .expect("valid")
        .part("doc")
        .part("v2")
        .finish();
    assert_eq!(a.memo_key(), Some(&want));
    assert_ne!(a.memo_key(), b.memo_key());
    assert_eq!(Job::new(JobType::Indexing, &b""[..]).memo_key(), None);
}

/// The names the seed printed; error messages and logs show them.
#[test]
fn display_names_follow_the_seed() {
    let types = JobType::ALL.map(|t| t.to_string());
    assert_eq!(
        types,
        ["TRANSCRIPTION", "SUMMARIZATION", "INDEXING", "TRANSLATION"]
    );
    assert_eq!(
        JobPriority::ALL.map(|p| p.to_string()),
        ["LOW", "MEDIUM", "HIGH"]
    );
    let statuses = STATUSES.map(|s| s.to_string());
    assert_eq!(
        statuses,
        ["QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"]
    );
    let mut job = job_in(JobStatus::Completed);
    let err = job.fail("late".into(), T).expect_err("terminal");
    assert!(
        err.to_string().contains("from COMPLETED to FAILED"),
        "{err}"
    );
    let worker = WorkerId::from(String::from("worker-3"));
    assert_eq!(
        (worker.as_str(), worker.to_string()),
        ("worker-3", "worker-3".to_owned())
    );
}

/// Payloads and results are opaque bytes (the host encrypts them) that must not end up in
/// logs: `Debug` shows their length only, also inside a job's `Debug`. The bytes themselves
/// come back unchanged.
#[test]
fn payloads_and_results_are_kept_but_not_shown() {
    let mut job = Job::new(JobType::Indexing, &b"secret-input"[..]).with_priority(JobPriority::Low);
    assert_eq!(job.priority(), JobPriority::Low);
    job.start_processing("w".into(), T).expect("start");
    job.complete(JobResult::from(&b"secret-output"[..]), T)
        .expect("complete");
    let debug = format!("{job:?}");
    assert!(!debug.contains("secret"), "{debug}");
    assert!(debug.contains("JobPayload(12 bytes)"), "{debug}");
    assert!(debug.contains("JobResult(13 bytes)"), "{debug}");
    assert_eq!(job.payload().as_bytes().as_ref(), b"secret-input");
    assert_eq!(job.payload().clone().into_bytes().as_ref(), b"secret-input");
    let result = job.result().cloned().map(JobResult::into_bytes);
    assert_eq!(result.as_deref(), Some(&b"secret-output"[..]));
}

/// A worker's name is kept inline up to 15 bytes and shared beyond: whichever way, a
/// `WorkerId` behaves as its text — equality, hashing, order, display — and clones keep it.
mod worker_id {
    use memocache::WorkerId;
    use proptest::prelude::*;
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{Hash, Hasher};

    fn hash_of(id: &WorkerId) -> u64 {
        let mut hasher = DefaultHasher::new();
        id.hash(&mut hasher);
        hasher.finish()
    }

    #[test]
    fn names_either_side_of_the_inline_limit_keep_their_text() {
        // 15 and 16 bytes, a two-byte character that would straddle the limit, and the
        // limit of an earlier layout (22).
        let names = [
            "",
            "w",
            &"a".repeat(15),
            &"a".repeat(16),
            &format!("{}é", "a".repeat(14)),
            &"a".repeat(22),
            &"a".repeat(23),
        ];
        for name in names {
            let id = WorkerId::new(name);
            assert_eq!(id.as_str(), name);
            assert_eq!(id.clone().as_str(), name);
            assert_eq!(id.to_string(), name);
            assert_eq!(format!("{id:?}"), format!("WorkerId({name:?})"));
            assert_eq!(WorkerId::from(name.to_string()), id);
        }
    }

    proptest! {
        /// Any two names, inline or shared: the ids compare, order and hash as their text.
        #[test]
        fn ids_compare_as_their_names(a in ".{0,30}", b in ".{0,30}") {
            let (x, y) = (WorkerId::new(&a), WorkerId::new(&b));
            prop_assert_eq!(x == y, a == b);
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            prop_assert_eq!(WorkerId::new(&a), x.clone());
            prop_assert_eq!(hash_of(&x), hash_of(&WorkerId::from(a.clone())));
            prop_assert_eq!(x.as_str(), a.as_str());
        }
    }
}
