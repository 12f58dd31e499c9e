//! Command intake over MQTT 5, for external brokers: a second connection (client id `{client_id}-cmd`, clean
//! start, no will) that subscribes to `{base}/cmd/+` at QoS 0 and answers on the request's *response topic* with
//! its *correlation data* when the sender used MQTT 5 (`mosquitto_pub -V 5 -D publish response-topic …`), or on
//! the payload's `reply_to` otherwise. Alarm publishing stays on the MQTT 3.1.1 connection, whose delivery
//! tracking is tested against every broker; the embedded broker speaks MQTT 3.1.1 only, so there commands arrive
//! on that connection instead (`docs/decisions/0001-embedded-broker.md`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::{Outgoing as Sent, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::command::{Handler, Outgoing, ResponseInfo};
use super::topics::Topics;

/// How to reach the brokers (the same list as the publisher's).
#[derive(Clone)]
pub(super) struct Link {
    pub endpoints: Vec<(String, u16)>,
    pub client_id: String,
    pub keep_alive: Duration,
    pub credentials: Option<(String, String)>,
    pub transport: Transport,
}

impl Link {
    fn options(&self, idx: usize) -> MqttOptions {
        let (host, port) = &self.endpoints[idx % self.endpoints.len()];
        let mut o = MqttOptions::new(self.client_id.clone(), host.clone(), *port);
        // rumqttc's MQTT 5 client panics below 5 s; commands need no faster dead-link detection than that.
        o.set_keep_alive(self.keep_alive.max(Duration::from_secs(5)))
            .set_clean_start(true)
            .set_transport(self.transport.clone());
        if let Some((u, p)) = &self.credentials {
            o.set_credentials(u.clone(), p.clone());
        }
        // Replies are small writes that must leave at once (see the publisher's TCP_NODELAY).
        let mut network = o.network_options();
        network.set_tcp_nodelay(true);
        o.set_network_options(network);
        o
    }
}

/// Runs the intake until `cancel` fires: one task polls, this one publishes the replies handlers produce.
pub(super) async fn run(
    link: Link,
    topics: Topics,
    handler: Handler,
    mut replies: mpsc::Receiver<Outgoing>,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let (client, eventloop) = AsyncClient::new(link.options(0), 64);
    let stop = CancellationToken::new();
    let connected = Arc::new(AtomicBool::new(false));
    let dispatch = Dispatch { topics, handler, tracker };
    let mut poller = tokio::spawn(poll(eventloop, link, client.clone(), dispatch, connected.clone(), stop.clone()));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = replies.recv() => match r {
                Some(r) => {
                    let props = PublishProperties { correlation_data: r.correlation, ..Default::default() };
                    if let Err(e) = client.try_publish_with_properties(r.topic, QoS::AtLeastOnce, false, r.payload, props) {
                        tracing::warn!(error = %e, "cannot queue a command reply");
                    }
                }
                None => break,
            },
        }
    }
    // A clean disconnect only makes sense on a live connection; otherwise stop at once.
    if connected.load(Ordering::Relaxed)
        && client.try_disconnect().is_ok()
        && tokio::time::timeout(Duration::from_secs(1), &mut poller).await.is_ok()
    {
        return;
    }
    stop.cancel();
    let _ = poller.await;
}

/// Where incoming commands go.
struct Dispatch {
    topics: Topics,
    handler: Handler,
    tracker: TaskTracker,
}

async fn poll(
    mut el: EventLoop,
    link: Link,
    client: AsyncClient,
    dispatch: Dispatch,
    connected: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let Dispatch { topics, handler, tracker } = dispatch;
    let mut idx = 0usize;
    let mut failures = 0u32;
    let mut last_error = String::new();
    loop {
        let polled = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            r = el.poll() => r,
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                last_error.clear();
                connected.store(true, Ordering::Relaxed);
                tracing::info!(client_id = %link.client_id, "MQTT 5 command intake connected");
                if let Err(e) = client.try_subscribe(topics.command_filter(), QoS::AtMostOnce) {
                    tracing::error!(error = %e, "cannot subscribe to MQTT commands");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                if let Some((bed, sender)) = topics.command_target(&topic) {
                    let (response_topic, correlation) =
                        p.properties.map(|pr| (pr.response_topic, pr.correlation_data)).unwrap_or_default();
                    let sender = sender.map(str::to_owned);
                    let info = ResponseInfo { response_topic, correlation, retained: p.retain, sender };
                    tracker.spawn(handler.clone().handle(bed.to_owned(), p.payload.to_vec(), info));
                }
            }
            Ok(Event::Outgoing(Sent::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                connected.store(false, Ordering::Relaxed);
                let (host, port) = &link.endpoints[idx % link.endpoints.len()];
                let message = format!("MQTT 5 command intake: broker at {host}:{port}: {e}");
                if message != last_error {
                    tracing::error!(error = %message, "MQTT");
                    last_error = message;
                }
                el.pending.clear();
                failures = failures.saturating_add(1);
                idx = (idx + 1) % link.endpoints.len();
                el.options = link.options(idx);
                let delay = super::publisher::backoff_delay(failures);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
