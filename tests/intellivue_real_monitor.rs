//! Vigil's IntelliVue decoder against bytes a real monitor sent (not the simulator's): a connect indication and a
//! poll result of numerics from a Philips IntelliVue with no patient connected, transcribed from public hex dumps
//! (tests/fixtures/intellivue-real/PROVENANCE.md).

use vigil::ingest::protocol::intellivue::{parameter_of, parse_connect_indication, parse_pdu, status_of, Pdu};
use vigil::vitals::{Parameter, ValueStatus};

const CONNECT_INDICATION: &[u8] = include_bytes!("fixtures/intellivue-real/connect_indication.bin");
const POLL_RESULT: &[u8] = include_bytes!("fixtures/intellivue-real/poll_result.bin");

#[test]
fn a_real_monitors_connect_indication_gives_its_address_and_the_data_export_port_24105() {
    let ci = parse_connect_indication(CONNECT_INDICATION).expect("a real connect indication parses");
    assert_eq!(ci.ip, Some(std::net::Ipv4Addr::new(192, 168, 247, 101)));
    assert_eq!(ci.data_port, Some(24105));
}

#[test]
fn a_real_poll_result_with_no_patient_decodes_every_numeric_as_no_value_and_never_valid() {
    let Pdu::Poll(poll) = parse_pdu(POLL_RESULT).expect("a real poll result parses") else {
        panic!("not a poll result");
    };
    assert_eq!(poll.poll_number, 1);
    assert_eq!(poll.object_class, 6, "NOM_MOC_VMO_METRIC_NU");
    assert_eq!(poll.time, None, "the monitor left the poll's absolute time unset (all FF)");
    assert_eq!(poll.relative_time, 0x0BC4_1F00);
    let seen: Vec<(u16, u16, u16, u16)> =
        poll.numerics.iter().map(|n| (n.handle, n.physio_id, n.state, n.unit)).collect();
    assert_eq!(
        seen,
        vec![
            // NBP systolic, diastolic, mean (a compound value): unavailable, mmHg.
            (0x8272, 0x4A05, 0x2000, 0x0F20),
            (0x8272, 0x4A06, 0x2000, 0x0F20),
            (0x8272, 0x4A07, 0x2000, 0x0F20),
            (0x8275, 0xF0E5, 0x2000, 0x0AA0),
            // Heart rate: invalid, bpm. Respiration rate: invalid, rpm.
            (0x82CF, 0x4182, 0x8200, 0x0AA0),
            (0x82D6, 0x500A, 0x8000, 0x0AE0),
            // Eight ST values (a compound value): invalid, mm.
            (0x82DB, 0x0301, 0x8000, 0x0512),
            (0x82DB, 0x0302, 0x8000, 0x0512),
            (0x82DB, 0x033D, 0x8000, 0x0512),
            (0x82DB, 0x033E, 0x8000, 0x0512),
            (0x82DB, 0x033F, 0x8000, 0x0512),
            (0x82DB, 0x0340, 0x8000, 0x0512),
            (0x82DB, 0x0343, 0x8000, 0x0512),
            (0x82DB, 0x034B, 0x8000, 0x0512),
        ]
    );
    assert!(poll.numerics.iter().all(|n| n.value.is_none()), "every value is the FLOAT-Type NaN 0x007FFFFF");
    assert!(poll.numerics.iter().all(|n| status_of(n.state) == ValueStatus::Unavailable));
    let mapped: Vec<Parameter> = poll.numerics.iter().filter_map(|n| parameter_of(n.physio_id)).collect();
    assert_eq!(mapped, vec![Parameter::NibpSys, Parameter::NibpDia, Parameter::NibpMean, Parameter::Hr, Parameter::Rr]);
    // The NBP objects carry NOM_ATTR_TIME_STAMP_ABS 2025-05-23 11:45:00.00; the others carry none.
    let stamped: Vec<String> =
        poll.numerics.iter().filter_map(|n| n.time.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())).collect();
    assert_eq!(stamped, vec!["2025-05-23 11:45:00"; 4]);
    assert_eq!(poll.patient_alarms, None);
    assert_eq!(poll.technical_alarms, None);
}
