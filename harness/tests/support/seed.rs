//! The proptest seed of a test binary: `TEARDOWN_PROPTEST_SEED` unset means
//! a fixed seed (what `just test` checks, the same inputs every time), a
//! number means that seed, `random` a fresh one. Tests print the seed and
//! name it in failures, so any run can be repeated.

/// The seed `just test` uses unless told otherwise.
pub const FIXED_SEED: u64 = 0x7ea2_d0e1;

pub fn seed_from_env() -> u64 {
    match std::env::var("TEARDOWN_PROPTEST_SEED").as_deref() {
        Err(_) | Ok("") => FIXED_SEED,
        Ok("random") => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            t.as_secs()
                ^ u64::from(t.subsec_nanos()).rotate_left(32)
                ^ u64::from(std::process::id())
        }
        Ok(n) => n.parse().unwrap_or_else(|_| {
            panic!("TEARDOWN_PROPTEST_SEED={n}: expected a number or `random`")
        }),
    }
}
