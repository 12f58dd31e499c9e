//! Two independent implementations held against each other: the simulator's device encoders (a fake monitor)
//! and the daemon's decoders. Every value the simulated monitor displayed must decode to the same number.

use bytes::BytesMut;
use tokio_util::codec::Decoder;
use vigil::config::DeviceKind;
use vigil::ingest::protocol::Frame;
use vigil::ingest::AnyDecoder;
use vigil::vitals::{Parameter, ValueStatus};
use vigil_sim::{Device, FeedOptions, SensorState, Simulation, Speed};

fn simulation(scenario: &str, device: Device, seed: u64) -> Simulation {
    let opts = FeedOptions { scenario: scenario.into(), device, seed, speed: Speed::Max, patient: 0, device_id: None };
    Simulation::new(&opts, vigil_sim::fixed_epoch()).unwrap()
}

fn kind(device: Device) -> DeviceKind {
    match device {
        Device::Masimo => DeviceKind::Masimo,
        Device::Nonin => DeviceKind::Nonin,
        Device::Hl7 => DeviceKind::Hl7,
        Device::S5 => DeviceKind::S5,
        Device::Intellivue => DeviceKind::Intellivue,
    }
}

fn decode(decoder: &mut AnyDecoder, buf: &mut BytesMut, bytes: &[u8]) -> Vec<Frame> {
    buf.extend_from_slice(bytes);
    let mut frames = Vec::new();
    while let Some(item) = decoder.decode(buf).unwrap() {
        frames.push(item.expect("the simulator's bytes are well formed"));
    }
    frames
}

fn value(frames: &[Frame], parameter: Parameter) -> Option<(Option<f64>, ValueStatus)> {
    frames.iter().flat_map(|f| &f.measurements).find(|m| m.parameter == parameter).map(|m| (m.value, m.status))
}

/// Counts of values compared, so no case passes by comparing nothing.
#[derive(Default, Debug)]
struct Compared {
    spo2: usize,
    pulse: usize,
    nibp: usize,
}

fn round_trip(scenario: &str, device: Device, seed: u64) -> Compared {
    let mut decoder = AnyDecoder::for_device(kind(device));
    let mut buf = BytesMut::new();
    let mut compared = Compared::default();
    for tick in simulation(scenario, device, seed) {
        let sample = &tick.sample;
        assert_eq!(sample.garbage, 0, "{scenario} has garbage bytes: pick a clean scenario for round trips");
        let frames = decode(&mut decoder, &mut buf, &tick.bytes);
        if frames.is_empty() {
            continue;
        }
        let at = format!("{scenario}/{device:?} at {} s", sample.offset_s);
        if sample.sensor == SensorState::Ok {
            if let Some(spo2) = sample.shown.spo2 {
                let (decoded, status) = value(&frames, Parameter::Spo2).unwrap_or_else(|| panic!("{at}: no SpO2"));
                assert_eq!(decoded, Some(f64::from(spo2)), "{at}: SpO2");
                assert_eq!(status, ValueStatus::Valid, "{at}: SpO2 status");
                compared.spo2 += 1;
            }
            if let Some(pulse) = sample.shown.pulse {
                let (decoded, _) = value(&frames, Parameter::Pr).unwrap_or_else(|| panic!("{at}: no pulse"));
                assert_eq!(decoded, Some(f64::from(pulse)), "{at}: pulse");
                compared.pulse += 1;
            }
        } else if let Some((decoded, status)) = value(&frames, Parameter::Spo2) {
            assert!(
                decoded.is_none() || status != ValueStatus::Valid,
                "{at}: sensor {:?} but SpO2 decoded as valid {decoded:?}",
                sample.sensor
            );
        }
        if let Some(values) = sample.nibp.and_then(|n| n.values) {
            if matches!(device, Device::Hl7 | Device::Intellivue) {
                let sys = value(&frames, Parameter::NibpSys).unwrap_or_else(|| panic!("{at}: no NIBP"));
                let dia = value(&frames, Parameter::NibpDia).unwrap();
                let mean = value(&frames, Parameter::NibpMean).unwrap();
                assert_eq!(sys.0, Some(f64::from(values.systolic)), "{at}: systolic");
                assert_eq!(dia.0, Some(f64::from(values.diastolic)), "{at}: diastolic");
                assert_eq!(mean.0, Some(f64::from(values.mean)), "{at}: mean");
                compared.nibp += 1;
            }
        }
    }
    assert!(buf.len() < 1024, "{scenario}/{device:?}: {} bytes left undecoded", buf.len());
    compared
}

#[test]
fn masimo_lines_from_the_simulator_decode_to_the_values_it_displayed() {
    for scenario in ["calm-session", "desaturation"] {
        let c = round_trip(scenario, Device::Masimo, 7);
        assert!(c.spo2 > 100 && c.pulse > 100, "{scenario}: {c:?}");
    }
}

#[test]
fn nonin_frames_from_the_simulator_decode_to_the_values_it_displayed() {
    for scenario in ["calm-session", "desaturation"] {
        let c = round_trip(scenario, Device::Nonin, 7);
        assert!(c.spo2 > 100 && c.pulse > 100, "{scenario}: {c:?}");
    }
}

#[test]
fn hl7_messages_from_the_simulator_decode_to_the_values_it_displayed_including_nibp() {
    for scenario in ["calm-session", "hypertensive-surge"] {
        let c = round_trip(scenario, Device::Hl7, 7);
        assert!(c.spo2 > 100 && c.pulse > 100 && c.nibp >= 4, "{scenario}: {c:?}");
    }
}

#[test]
fn intellivue_poll_results_from_the_simulator_decode_to_the_values_it_displayed_including_nibp() {
    for scenario in ["calm-session", "hypertensive-surge", "probe-off-and-artefacts"] {
        let c = round_trip(scenario, Device::Intellivue, 7);
        assert!(c.spo2 > 100 && c.pulse > 100 && c.nibp >= 4, "{scenario}: {c:?}");
    }
}

#[test]
fn the_simulated_intellivue_reports_its_own_spo2_low_alarm_while_spo2_is_below_90_and_ends_it_after() {
    let mut decoder = AnyDecoder::for_device(DeviceKind::Intellivue);
    let mut buf = BytesMut::new();
    let (mut with_alarm, mut without) = (0, 0);
    for tick in simulation("desaturation", Device::Intellivue, 7) {
        let frames = decode(&mut decoder, &mut buf, &tick.bytes);
        let lists: Vec<_> = frames.iter().filter_map(|f| f.device_alarms.as_ref()).collect();
        assert_eq!(lists.len(), 1, "one alert result per second");
        let low = lists[0].iter().any(|a| a.text == "SpO2 LOW" && a.parameter == Some(Parameter::Spo2));
        let shown_low = tick.sample.shown.spo2.is_some_and(|v| v < 90) && tick.sample.sensor == SensorState::Ok;
        assert_eq!(low, shown_low, "at {} s: SpO2 {:?}", tick.sample.offset_s, tick.sample.shown.spo2);
        if low {
            with_alarm += 1;
        } else {
            without += 1;
        }
    }
    assert!(with_alarm > 10 && without > 100, "{with_alarm} / {without}");
}

#[test]
fn the_desaturation_scenario_decodes_below_88_percent_through_the_daemon_decoder() {
    let mut decoder = AnyDecoder::for_device(DeviceKind::Masimo);
    let mut buf = BytesMut::new();
    let lowest = simulation("desaturation", Device::Masimo, 7)
        .flat_map(|tick| decode(&mut decoder, &mut buf, &tick.bytes))
        .filter_map(|f| value(std::slice::from_ref(&f), Parameter::Spo2).and_then(|(v, _)| v))
        .fold(f64::MAX, f64::min);
    assert!(lowest < 88.0, "lowest decoded SpO2 {lowest}");
}

#[test]
fn s5_records_from_the_simulator_decode_to_the_values_and_alarms_the_monitor_showed() {
    use vigil_sim::devices::s5;
    for scenario in ["desaturation", "hypertensive-surge", "probe-off-and-artefacts"] {
        let mut decoder = AnyDecoder::for_device(DeviceKind::S5);
        let mut buf = BytesMut::new();
        let (mut records, mut alarms_seen, mut nibp) = (0, 0, 0);
        let mut last_nibp = None;
        for tick in simulation(scenario, Device::S5, 7) {
            let sample = &tick.sample;
            if let Some(values) = sample.nibp.and_then(|n| n.values) {
                last_nibp = Some(values);
            }
            buf.extend_from_slice(&tick.bytes);
            let mut frames = Vec::new();
            while let Some(item) = decoder.decode(&mut buf).unwrap() {
                // Line noise between records is one bad frame; the records themselves are well formed.
                if let Ok(f) = item {
                    frames.push(f);
                }
            }
            let at = format!("{scenario} at {} s", sample.offset_s);
            for f in &frames {
                if let Some(list) = &f.device_alarms {
                    let expected = s5::monitor_alarms(sample, last_nibp);
                    let texts: Vec<&str> = list.iter().map(|a| a.text.as_str()).collect();
                    let wanted: Vec<&str> = expected.iter().map(|(t, _)| t.as_str()).collect();
                    assert_eq!(texts, wanted, "{at}: alarms");
                    alarms_seen += usize::from(!list.is_empty());
                    continue;
                }
                records += 1;
                assert_eq!(f.device_time, Some(sample.device_time), "{at}: record time");
                match sample.shown.spo2 {
                    Some(spo2) if sample.sensor != SensorState::NoSensor => {
                        assert_eq!(
                            value(std::slice::from_ref(f), Parameter::Spo2),
                            Some((Some(f64::from(spo2)), ValueStatus::Valid)),
                            "{at}"
                        )
                    }
                    _ => assert!(
                        value(std::slice::from_ref(f), Parameter::Spo2).is_none_or(|(v, _)| v.is_none()),
                        "{at}"
                    ),
                }
                if let Some((Some(sys), _)) = value(std::slice::from_ref(f), Parameter::NibpSys) {
                    assert_eq!(Some(sys), last_nibp.map(|n| f64::from(n.systolic)), "{at}: systolic");
                    nibp += 1;
                }
            }
        }
        assert!(records > 100, "{scenario}: {records} records");
        assert!(nibp >= 2, "{scenario}: {nibp} NIBP results");
        if scenario != "hypertensive-surge" {
            assert!(alarms_seen > 0, "{scenario}: the monitor never showed an alarm");
        }
    }
}
