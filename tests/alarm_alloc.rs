//! The hot path does not allocate: once warmed up, an observation that raises nothing returns an empty `Vec`
//! without touching the allocator (counted by a global allocator; this file holds one test so nothing else
//! allocates concurrently).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use vigil::alarm::{Engine, Profile};
use vigil::vitals::{Parameter, Reading, ValueStatus};

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_observations_and_ticks_that_raise_nothing_do_not_allocate() {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).unwrap();
    let mut engine = Engine::new("chair-1".into(), Arc::new(Profile::ketamine_chair()), 1);
    let readings: Vec<Reading> =
        [(Parameter::Hr, 75.0), (Parameter::Pr, 76.0), (Parameter::Spo2, 97.0), (Parameter::Rr, 14.0)]
            .into_iter()
            .map(|(p, v)| Reading {
                bed: "chair-1".into(),
                parameter: p,
                value: Some(v),
                status: ValueStatus::Valid,
                device_time: None,
                received: t0,
                measured: None,
                spot: false,
                source: None,
            })
            .collect();
    let mut feed = |from: i64, to: i64| {
        let mut events = 0;
        for s in from..to {
            let now = t0 + TimeDelta::seconds(s);
            events += engine.tick(now).len();
            for (k, r) in readings.iter().enumerate() {
                // A little wobble so the trend detectors have work to do.
                let mut r = r.clone();
                r.value = r.value.map(|v| v + [0.0, 1.0, 0.0, -1.0][(s as usize + k) % 4]);
                events += engine.observe(&r, now).len();
            }
        }
        events
    };
    // Warm-up: trend windows fill and their buffers reach their working size.
    assert_eq!(feed(0, 900), 0);
    let clones_per_second = {
        // Cloning the readings in the loop above allocates (the clone of the bed id does not, it is an Arc);
        // measure the loop's own allocations without the engine to subtract them.
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for r in &readings {
            std::hint::black_box(r.clone());
        }
        ALLOCATIONS.load(Ordering::Relaxed) - before
    };
    assert_eq!(clones_per_second, 0, "cloning a reading should not allocate");
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(feed(900, 1800), 0);
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed) - before,
        0,
        "allocations in 3,600 steady observations and 900 ticks"
    );
}
