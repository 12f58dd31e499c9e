//! The library API the daemon's demo uses: an AsyncRead of device bytes plus scripted markers.

mod common;

use std::time::Duration;

use common::{opts, ticks};
use tokio::io::AsyncReadExt;
use vigil_sim::{Device, FeedOptions, MarkerKind, SimError, Speed};

#[tokio::test]
async fn feed_at_max_speed_yields_the_whole_scenario_then_eof() {
    let o = opts("desaturation", Device::Nonin, 7);
    let expected: usize = ticks(&o).iter().map(|t| t.bytes.len()).sum();
    let mut feed = vigil_sim::feed(o).unwrap();
    let mut all = Vec::new();
    feed.reader.read_to_end(&mut all).await.unwrap();
    assert_eq!(all.len(), expected);
    // Nonin bytes do not depend on the clock, so they equal the virtual-time run exactly.
    let reference: Vec<u8> = ticks(&opts("desaturation", Device::Nonin, 7)).into_iter().flat_map(|t| t.bytes).collect();
    assert_eq!(all, reference);
    let mut kinds = Vec::new();
    while let Ok(m) = feed.markers.try_recv() {
        kinds.push(m.kind);
    }
    assert_eq!(
        kinds,
        [MarkerKind::SessionStart, MarkerKind::InfusionStart, MarkerKind::InfusionStop, MarkerKind::SessionEnd]
    );
}

#[tokio::test(start_paused = true)]
async fn feed_in_real_time_goes_silent_during_a_disconnect_and_resumes() {
    let o = FeedOptions { speed: Speed::Factor(1.0), ..opts("monitor-disconnect", Device::Masimo, 5) };
    let mut feed = vigil_sim::feed(o).unwrap();
    let mut buf = vec![0u8; 4096];
    let start = tokio::time::Instant::now();
    let mut lines_before = 0;
    // The first 60 lines (0 s to 59 s) arrive one per second, in (virtual) real time.
    while lines_before < 60 {
        let n = tokio::time::timeout(Duration::from_secs(2), feed.reader.read(&mut buf)).await.unwrap().unwrap();
        lines_before += buf[..n].iter().filter(|b| **b == b'\n').count();
    }
    assert_eq!(lines_before, 60);
    let took = start.elapsed();
    assert!(took >= Duration::from_secs(59) && took < Duration::from_millis(59_100), "{took:?}");
    // The unplugged cable: nothing for the 45 s window.
    let silent = tokio::time::timeout(Duration::from_secs(40), feed.reader.read(&mut buf)).await;
    assert!(silent.is_err(), "bytes arrived while the cable was unplugged");
    let n = tokio::time::timeout(Duration::from_secs(10), feed.reader.read(&mut buf)).await.unwrap().unwrap();
    assert!(n > 0);
    // Markers pass as the reader is read (the daemon's pump reads all the time, the silent window included).
    let mut markers = Vec::new();
    while let Ok(m) = feed.markers.try_recv() {
        markers.push((m.kind, m.offset_s));
    }
    assert_eq!(markers.first(), Some(&(MarkerKind::SessionStart, 0.0)));
    let link: Vec<_> = markers
        .iter()
        .filter(|(k, _)| matches!(k, MarkerKind::Disconnected | MarkerKind::Reconnected))
        .copied()
        .collect();
    assert_eq!(link, [(MarkerKind::Disconnected, 60.0), (MarkerKind::Reconnected, 105.0)]);
}

#[tokio::test(start_paused = true)]
async fn speed_factor_scales_real_time() {
    let o = FeedOptions { speed: Speed::Factor(60.0), ..opts("calm-session", Device::Nonin, 1) };
    let mut feed = vigil_sim::feed(o).unwrap();
    let start = tokio::time::Instant::now();
    let mut got = 0;
    let mut buf = [0u8; 1024];
    while got < 4 * 601 {
        got += feed.reader.read(&mut buf).await.unwrap();
    }
    // 600 virtual seconds at 60x take 10 s.
    let took = start.elapsed();
    assert!(took >= Duration::from_secs(10) && took < Duration::from_millis(10_100), "{took:?}");
}

#[tokio::test]
async fn dropping_the_reader_stops_the_feed() {
    let feed = vigil_sim::feed(opts("stress", Device::Hl7, 1)).unwrap();
    let mut markers = feed.markers;
    drop(feed.reader);
    // The simulation goes with the reader, which closes the marker channel, instead of simulating two hours into
    // the void.
    let closed = tokio::time::timeout(Duration::from_secs(10), async { while markers.recv().await.is_some() {} }).await;
    assert!(closed.is_ok());
}

#[test]
fn feed_outside_a_runtime_is_an_error_not_a_panic() {
    assert!(matches!(vigil_sim::feed(opts("calm-session", Device::Masimo, 1)), Err(SimError::NoRuntime)));
}

#[tokio::test]
async fn feed_rejects_bad_options_with_clear_errors() {
    let e = vigil_sim::feed(opts("nope", Device::Masimo, 1)).unwrap_err().to_string();
    assert!(e.contains("unknown scenario 'nope'"), "{e}");
    let e = vigil_sim::feed(FeedOptions { speed: Speed::Factor(0.0), ..opts("calm-session", Device::Masimo, 1) })
        .unwrap_err()
        .to_string();
    assert!(e.contains("speed"), "{e}");
    let e = vigil_sim::feed(FeedOptions { speed: Speed::Factor(f64::NAN), ..opts("calm-session", Device::Masimo, 1) });
    assert!(e.is_err());
}

#[test]
fn speed_and_device_parse_from_cli_words() {
    assert_eq!("max".parse::<Speed>().unwrap(), Speed::Max);
    assert_eq!("60".parse::<Speed>().unwrap(), Speed::Factor(60.0));
    assert!("-1".parse::<Speed>().is_err() && "fast".parse::<Speed>().is_err() && "inf".parse::<Speed>().is_err());
    assert_eq!("HL7".parse::<Device>().unwrap(), Device::Hl7);
    assert!("philips".parse::<Device>().is_err());
}

#[test]
fn the_feed_types_meet_the_daemons_contract() {
    fn reader<T: tokio::io::AsyncRead + Send + Unpin + 'static>() {}
    fn sendable<T: Send + 'static>() {}
    reader::<vigil_sim::FeedReader>();
    sendable::<vigil_sim::Feed>();
    sendable::<vigil_sim::Marker>();
    // The contract's field names, by destructuring.
    let _ = |f: vigil_sim::Feed| {
        let vigil_sim::Feed { reader: _, markers: _ } = f;
    };
    let _ = |m: vigil_sim::Marker| {
        let vigil_sim::Marker { offset_s: _, kind: _ } = m;
    };
}
