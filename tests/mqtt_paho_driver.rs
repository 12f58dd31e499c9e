//! The Vigil side of `tests/ci/paho_check.py`: a publisher (hub + store + `mqtt::spawn`, with a fake bed that
//! answers acknowledgements) that emits alarm events at a steady pace against the broker the script runs. It is
//! ignored (with a reason) because it only makes sense driven by that script; on its own it does nothing.

mod mqtt_support;

use std::path::Path;
use std::time::Duration;

use mqtt_support::*;
use tokio_util::sync::CancellationToken;
use vigil::mqtt::{self, LinkState};
use vigil::store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "driven by tests/ci/paho_check.py"]
async fn paho_driver() {
    let (Ok(dir), Ok(port)) = (std::env::var("VIGIL_PAHO_DIR"), std::env::var("VIGIL_PAHO_PORT")) else {
        eprintln!("paho_driver: run by tests/ci/paho_check.py (needs VIGIL_PAHO_DIR and VIGIL_PAHO_PORT)");
        return;
    };
    let events: u32 = std::env::var("VIGIL_PAHO_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let interval: u64 = std::env::var("VIGIL_PAHO_INTERVAL_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let dir = Path::new(&dir);
    let mqtt_cfg = format!(
        "mode = \"external\"\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"vigil-paho\"\nkeep_alive_s = 2"
    );
    let cfg = config(dir, &mqtt_cfg, &users());
    let store = Store::open(&dir.join("vigil.db")).unwrap();
    let hub = hub();
    let _bed = fake_bed(hub.clone(), store.clone(), "chair-1");
    let m = mqtt::spawn(cfg, hub.clone(), store.clone(), CancellationToken::new()).unwrap();
    let mut link = m.link.clone();
    link.wait_for(|l| l.state == LinkState::Connected).await.unwrap();
    println!("paho_driver: connected; emitting {events} alarm events every {interval} ms");
    for i in 0..events {
        let bed = if i % 2 == 0 { "chair-1" } else { "chair-2" };
        emit_alarm(&store, &hub, bed, &format!("{bed}-a{}", i / 10), i % 10 + 1);
        tokio::time::sleep(Duration::from_millis(interval)).await;
    }
    println!("paho_driver: done emitting; serving commands until killed");
    tokio::time::sleep(Duration::from_secs(600)).await;
}
