//! Handler tests through `app(state).oneshot(...)`, plus two over a real socket for `serve`.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::SaltString;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use chrono::Utc;
use futures::StreamExt;
use tokio::sync::mpsc;
use tower::ServiceExt;

use super::*;
use crate::event::{AlarmEvent, AlarmKind, AlarmPhase, AlarmState, Event, VitalValue, VitalsUpdate};
use crate::hub::{BedCommand, BedInfo};
use crate::vitals::ValueStatus;

/// Cheap argon2 parameters: verification reads them from the PHC string, so tests stay fast in debug builds.
fn hash(password: &str) -> String {
    let salt = SaltString::encode_b64(b"vigil-test-salt!").unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(64, 1, 1, None).unwrap())
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

fn config(read_only: bool, demo: bool, listen: &str) -> Arc<Config> {
    let toml = format!(
        r#"
[site]
name = "test-clinic"
ward = "suite"
[dashboard]
listen = "{listen}"
read_only_without_sign_in = {read_only}
demo_actions_without_sign_in = {demo}
[[users]]
name = "nina"
role = "nurse"
password_hash = "{nurse}"
[[users]]
name = "vic"
role = "viewer"
password_hash = "{viewer}"
[[beds]]
id = "chair-1"
label = "Chair 1"
"#,
        nurse = hash("nurse-pass"),
        viewer = hash("viewer-pass"),
    );
    Arc::new(Config::parse(&toml, "test.toml", FsPath::new(".")).unwrap())
}

fn hub() -> Arc<Hub> {
    Hub::new(
        "test-clinic",
        "suite",
        vec![
            BedInfo { id: "chair-1".into(), label: "Chair 1".into(), profile: "ketamine-chair".into() },
            BedInfo { id: "chair-2".into(), label: "chair-2".into(), profile: "ketamine-chair".into() },
        ],
    )
}

struct Fixture {
    state: DashboardState,
    history: Arc<MemoryHistory>,
    commands: mpsc::Receiver<BedCommand>,
}

fn fixture_with(read_only: bool, demo: bool) -> Fixture {
    let hub = hub();
    let (tx, commands) = mpsc::channel(8);
    hub.register_bed("chair-1".into(), tx);
    let history = MemoryHistory::new();
    let state = DashboardState::new(hub, config(read_only, demo, "127.0.0.1:8080"), history.clone()).unwrap();
    Fixture { state, history, commands }
}

fn fixture() -> Fixture {
    fixture_with(true, false)
}

/// Answers the next command like a bed would, and hands back what it received.
fn answer_next(mut commands: mpsc::Receiver<BedCommand>) -> tokio::task::JoinHandle<CommandRequest> {
    tokio::spawn(async move {
        let cmd = commands.recv().await.expect("a command reaches the bed");
        let _ = cmd.reply.send(Ok(Vec::new()));
        *cmd.request
    })
}

async fn send(state: &DashboardState, req: Request<Body>) -> Response {
    app(state.clone()).oneshot(req).await.unwrap()
}

async fn body_json(res: Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn sign_in(
    state: &DashboardState,
    name: &str,
    password: &str,
) -> (StatusCode, Option<String>, serde_json::Value) {
    let req = Request::post("/api/session")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "name": name, "password": password }).to_string()))
        .unwrap();
    let res = send(state, req).await;
    let status = res.status();
    let cookie = res.headers().get(header::SET_COOKIE).map(|v| v.to_str().unwrap().to_owned());
    (status, cookie, body_json(res).await)
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

fn ack_request(cookie: Option<&str>, csrf: Option<&str>) -> Request<Body> {
    let mut req = Request::post("/api/beds/chair-1/commands").header(header::CONTENT_TYPE, "application/json");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    if let Some(t) = csrf {
        req = req.header(auth::CSRF_HEADER, t);
    }
    req.body(Body::from(r#"{"command":"acknowledge","alarm_id":"a-1"}"#)).unwrap()
}

fn alarm(bed: &str, state: AlarmState, phase: AlarmPhase) -> AlarmEvent {
    AlarmEvent {
        time: Utc::now(),
        bed: bed.into(),
        alarm_id: "a-1".into(),
        seq: 1,
        bed_seq: 1,
        kind: AlarmKind::Threshold,
        source: crate::event::AlarmSource::Vigil,
        condition: "spo2_low".into(),
        parameter: Some(Parameter::Spo2),
        priority: Priority::High,
        phase,
        state,
        value: Some(85.0),
        limit: Some(88.0),
        evidence: Default::default(),
        message: "SpO2 85 < 88".into(),
        by: None,
        audio_paused_until: None,
        test: false,
    }
}

#[tokio::test]
async fn pages_and_assets_are_served_with_a_strict_content_security_policy() {
    let f = fixture();
    for (path, mime) in [
        ("/", "text/html"),
        ("/chair/chair-1", "text/html"),
        ("/chair/chair-1/print", "text/html"),
        ("/assets/app.css", "text/css"),
        ("/assets/ward.js", "text/javascript"),
    ] {
        let res = send(&f.state, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert!(res.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with(mime), "{path}");
        let csp = res.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{path}: {csp}");
    }
    for path in ["/assets/../Cargo.toml", "/assets/secret.js", "/chair/chair-9"] {
        let res = send(&f.state, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn the_ward_is_visible_without_sign_in_only_when_configured() {
    let open = fixture_with(true, false);
    let res = send(&open.state, Request::get("/api/snapshot").body(Body::empty()).unwrap()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_json(res).await["beds"].as_array().unwrap().len(), 2);

    let closed = fixture_with(false, false);
    for path in ["/api/snapshot", "/api/events", "/api/beds/chair-1/history", "/api/beds/chair-1/export.csv"] {
        let res = send(&closed.state, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let (_, cookie, _) = sign_in(&closed.state, "vic", "viewer-pass").await;
    let req = Request::get("/api/snapshot")
        .header(header::COOKIE, cookie_pair(&cookie.unwrap()))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&closed.state, req).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn sign_in_checks_the_argon2_hash_and_sets_a_strict_http_only_cookie() {
    let f = fixture();
    let (status, cookie, _) = sign_in(&f.state, "nina", "wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(cookie.is_none());
    let (status, _, _) = sign_in(&f.state, "nobody", "nurse-pass").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, cookie, me) = sign_in(&f.state, "nina", "nurse-pass").await;
    assert_eq!(status, StatusCode::OK);
    let cookie = cookie.unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert_eq!(me["user"], "nina");
    assert_eq!(me["can_act"], true);
    assert_eq!(me["csrf"].as_str().unwrap().len(), 64);

    let req = Request::get("/api/me").header(header::COOKIE, cookie_pair(&cookie)).body(Body::empty()).unwrap();
    let again = body_json(send(&f.state, req).await).await;
    assert_eq!(again["user"], "nina");
    assert_eq!(again["csrf"], me["csrf"]);
    let anonymous = body_json(send(&f.state, Request::get("/api/me").body(Body::empty()).unwrap()).await).await;
    assert_eq!(anonymous["user"], serde_json::Value::Null);
    assert_eq!(anonymous["can_act"], false);
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_the_name_for_a_while() {
    let f = fixture();
    for _ in 0..5 {
        assert_eq!(sign_in(&f.state, "nina", "guess").await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(sign_in(&f.state, "nina", "nurse-pass").await.0, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn acknowledge_needs_a_signed_in_nurse_and_the_csrf_token_and_carries_the_actor() {
    let f = fixture();
    assert_eq!(send(&f.state, ack_request(None, None)).await.status(), StatusCode::UNAUTHORIZED);

    let (_, cookie, me) = sign_in(&f.state, "nina", "nurse-pass").await;
    let cookie = cookie_pair(&cookie.unwrap());
    let csrf = me["csrf"].as_str().unwrap().to_owned();
    assert_eq!(send(&f.state, ack_request(Some(&cookie), None)).await.status(), StatusCode::FORBIDDEN);
    let wrong = "0".repeat(64);
    assert_eq!(send(&f.state, ack_request(Some(&cookie), Some(&wrong))).await.status(), StatusCode::FORBIDDEN);

    let mut cross_site = ack_request(Some(&cookie), Some(&csrf));
    cross_site.headers_mut().insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
    cross_site.headers_mut().insert(header::ORIGIN, "http://evil.example".parse().unwrap());
    assert_eq!(send(&f.state, cross_site).await.status(), StatusCode::FORBIDDEN);

    let bed = answer_next(f.commands);
    let res = send(&f.state, ack_request(Some(&cookie), Some(&csrf))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let request = bed.await.unwrap();
    assert_eq!(request.actor, "nina");
    assert_eq!(&*request.bed, "chair-1");
    assert_eq!(request.command, Command::Acknowledge { alarm_id: Some("a-1".into()) });
}

#[tokio::test]
async fn a_viewer_cannot_act() {
    let f = fixture();
    let (_, cookie, me) = sign_in(&f.state, "vic", "viewer-pass").await;
    assert_eq!(me["can_act"], false);
    let res = send(&f.state, ack_request(Some(&cookie_pair(&cookie.unwrap())), me["csrf"].as_str())).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn sign_out_ends_the_session() {
    let f = fixture();
    let (_, cookie, me) = sign_in(&f.state, "nina", "nurse-pass").await;
    let cookie = cookie_pair(&cookie.unwrap());
    let req = Request::delete("/api/session")
        .header(header::COOKIE, &cookie)
        .header(auth::CSRF_HEADER, me["csrf"].as_str().unwrap())
        .body(Body::empty())
        .unwrap();
    let res = send(&f.state, req).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    let res = send(&f.state, ack_request(Some(&cookie), me["csrf"].as_str())).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bed_errors_map_to_status_codes() {
    let f = fixture();
    let (_, cookie, me) = sign_in(&f.state, "nina", "nurse-pass").await;
    let cookie = cookie_pair(&cookie.unwrap());
    let csrf = me["csrf"].as_str().unwrap().to_owned();
    let post = |path: &str, body: &str| {
        Request::post(path)
            .header(header::COOKIE, &cookie)
            .header(auth::CSRF_HEADER, &csrf)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let res = send(&f.state, post("/api/beds/chair-9/commands", r#"{"command":"infusion_start"}"#)).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = send(&f.state, post("/api/beds/chair-1/commands", r#"{"command":"self_destruct"}"#)).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = send(&f.state, post("/api/beds/chair-1/commands", r#"{"command":"pause_audio","seconds":0}"#)).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // chair-2 has no running bed task.
    let res = send(&f.state, post("/api/beds/chair-2/commands", r#"{"command":"infusion_start"}"#)).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    let mut commands = f.commands;
    let bed = tokio::spawn(async move {
        let cmd = commands.recv().await.unwrap();
        let _ = cmd.reply.send(Err(CommandError::Refused("no session running".into())));
    });
    let res = send(&f.state, post("/api/beds/chair-1/commands", r#"{"command":"infusion_stop"}"#)).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(body_json(res).await["error"], "no session running");
    bed.await.unwrap();
}

#[tokio::test]
async fn demo_actions_work_without_sign_in_on_loopback_and_are_refused_elsewhere() {
    let err = DashboardState::new(hub(), config(true, true, "0.0.0.0:8080"), MemoryHistory::new()).err();
    assert!(matches!(err, Some(DashboardError::DemoActionsOffLoopback(_))), "{err:?}");

    let f = fixture_with(true, true);
    let me = body_json(send(&f.state, Request::get("/api/me").body(Body::empty()).unwrap()).await).await;
    assert_eq!(me["demo"], true);
    assert_eq!(me["can_act"], true);
    // Even the demo needs the token, so another site cannot drive the loopback demo.
    assert_eq!(send(&f.state, ack_request(None, None)).await.status(), StatusCode::FORBIDDEN);
    let bed = answer_next(f.commands);
    assert_eq!(send(&f.state, ack_request(None, me["csrf"].as_str())).await.status(), StatusCode::OK);
    assert_eq!(bed.await.unwrap().actor, "demo");
}

async fn next_event(body: &mut (impl futures::Stream<Item = Result<bytes::Bytes, axum::Error>> + Unpin)) -> String {
    let chunk = tokio::time::timeout(Duration::from_secs(5), body.next()).await.expect("an event within 5 s");
    String::from_utf8(chunk.unwrap().unwrap().to_vec()).unwrap()
}

fn vitals(bed: &str, spo2: f64) -> Event {
    Event::Vitals(VitalsUpdate {
        bed: bed.into(),
        time: Utc::now(),
        values: vec![VitalValue {
            parameter: Parameter::Spo2,
            value: Some(spo2),
            status: ValueStatus::Valid,
            time: Utc::now(),
        }],
        other: Vec::new(),
    })
}

#[tokio::test]
async fn the_stream_starts_with_a_snapshot_then_sends_events_and_heartbeats() {
    let f = fixture();
    f.state.hub.publish(vitals("chair-1", 97.0));
    let res = send(&f.state, Request::get("/api/events").body(Body::empty()).unwrap()).await;
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = res.into_body().into_data_stream();
    let first = next_event(&mut body).await;
    assert!(first.starts_with("event: snapshot\n") && first.contains(&format!("id: {}-1\n", f.state.epoch)), "{first}");
    assert!(first.contains("\"value\":97.0"), "{first}");
    assert!(next_event(&mut body).await.starts_with("event: heartbeat\n"));
    f.state.hub.publish(vitals("chair-1", 84.0));
    let ev = next_event(&mut body).await;
    assert!(ev.starts_with("event: hub\n") && ev.contains("-2\n") && ev.contains("\"type\":\"vitals\""), "{ev}");
    // Quiet ward: the next heartbeat still comes within the page's 4 s budget.
    let started = std::time::Instant::now();
    assert!(next_event(&mut body).await.starts_with("event: heartbeat\n"));
    assert!(started.elapsed() < Duration::from_millis(2500), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_client_resuming_with_last_event_id_gets_only_what_it_missed() {
    let f = fixture();
    for spo2 in [97.0, 96.0, 95.0] {
        f.state.hub.publish(vitals("chair-1", spo2));
    }
    let epoch = f.state.epoch.to_string();
    let req = Request::get("/api/events").header("last-event-id", format!("{epoch}-1")).body(Body::empty()).unwrap();
    let mut body = send(&f.state, req).await.into_body().into_data_stream();
    let a = next_event(&mut body).await;
    let b = next_event(&mut body).await;
    assert!(a.starts_with("event: hub\n") && a.contains(&format!("id: {epoch}-2\n")) && a.contains("96.0"), "{a}");
    assert!(b.contains(&format!("id: {epoch}-3\n")) && b.contains("95.0"), "{b}");
    // The query form (a page that rebuilt its EventSource) works the same way.
    let req = Request::get(format!("/api/events?last_id={epoch}-2")).body(Body::empty()).unwrap();
    let mut body = send(&f.state, req).await.into_body().into_data_stream();
    assert!(next_event(&mut body).await.contains(&format!("id: {epoch}-3\n")));
}

#[tokio::test]
async fn a_client_resuming_across_a_server_restart_gets_a_fresh_snapshot() {
    let f = fixture();
    f.state.hub.publish(vitals("chair-1", 97.0));
    // An id from another run, even one that this run's numbering could mistake for "nothing missed".
    for stale in ["0badbeef-5000", "0badbeef-0", "garbage"] {
        let req = Request::get("/api/events").header("last-event-id", stale).body(Body::empty()).unwrap();
        let mut body = send(&f.state, req).await.into_body().into_data_stream();
        let first = next_event(&mut body).await;
        assert!(first.starts_with("event: snapshot\n"), "{stale}: {first}");
    }
}

#[tokio::test]
async fn streams_end_with_a_shutdown_event_when_the_server_stops() {
    let f = fixture();
    let mut body =
        send(&f.state, Request::get("/api/events").body(Body::empty()).unwrap()).await.into_body().into_data_stream();
    assert!(next_event(&mut body).await.starts_with("event: snapshot"));
    f.state.shutdown_streams();
    let mut rest = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(2), body.next()).await.expect("stream ends") {
        rest.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(rest.contains("event: shutdown\n"), "{rest}");
}

#[tokio::test]
async fn serve_refuses_demo_actions_on_a_non_loopback_socket() {
    let f = fixture_with(true, true);
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = serve(listener, f.state, CancellationToken::new()).await.err();
    assert!(matches!(err, Some(DashboardError::DemoActionsOffLoopback(_))), "{err:?}");
}

#[tokio::test]
async fn serve_shuts_down_promptly_with_an_event_stream_open() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let server = tokio::spawn(serve(listener, f.state, cancel.clone()));
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = client.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
    cancel.cancel();
    let done = tokio::time::timeout(Duration::from_secs(3), server).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "serve did not stop with a stream open: {done:?}");
}

#[tokio::test]
async fn history_and_csv_export_cover_the_latest_session_with_who_did_what() {
    let f = fixture();
    let start = Utc::now() - chrono::Duration::minutes(30);
    f.history.record(&Event::Session(crate::event::SessionEvent {
        session_seq: 1,
        time: start,
        bed: "chair-1".into(),
        session_id: "s-42".into(),
        action: "session_start".into(),
        phase: crate::event::SessionPhase::PreInfusion,
        started: Some(start),
        infusion_started: None,
        patient: Some("P-7".into()),
        baseline: None,
        detail: None,
        by: Some("nina".into()),
    }));
    f.history.record(&vitals("chair-1", 85.0));
    f.history.record(&Event::Alarm(alarm("chair-1", AlarmState::Active, AlarmPhase::Start)));
    let mut acked = alarm("chair-1", AlarmState::Acknowledged, AlarmPhase::Update);
    acked.by = Some("nina".into());
    f.history.record(&Event::Alarm(acked));
    f.history.record_action(ActionRecord {
        time: Utc::now(),
        actor: "nina".into(),
        bed: "chair-1".into(),
        command: Some(Command::Acknowledge { alarm_id: Some("a-1".into()) }),
        request: r#"{"command":"acknowledge","alarm_id":"a-1"}"#.into(),
        ok: true,
        reason: None,
    });
    f.history.record_action(ActionRecord {
        time: Utc::now(),
        actor: "nina".into(),
        bed: "chair-1".into(),
        command: Some(Command::InfusionStop),
        request: r#"{"command":"infusion_stop"}"#.into(),
        ok: false,
        reason: Some("no infusion is running".into()),
    });

    // Users are configured: history and export need a signed-in user.
    let res = send(&f.state, Request::get("/api/beds/chair-1/history").body(Body::empty()).unwrap()).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = send(&f.state, Request::get("/api/beds/chair-1/export.csv").body(Body::empty()).unwrap()).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let (_, cookie, _) = sign_in(&f.state, "vic", "viewer-pass").await;
    let cookie = cookie_pair(&cookie.unwrap());
    let get = |path: &str| Request::get(path).header(header::COOKIE, cookie.clone()).body(Body::empty()).unwrap();
    let res = send(&f.state, get("/api/beds/chair-1/history")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let doc = body_json(res).await;
    assert_eq!(doc["session"]["session_id"], "s-42");
    assert_eq!(doc["session"]["patient"], "P-7", "signed-in staff see the pseudonym");
    assert_eq!(doc["vitals"].as_array().unwrap().len(), 1);
    assert_eq!(doc["alarms"].as_array().unwrap().len(), 2);
    assert_eq!(doc["actions"][0]["actor"], "nina");

    let res = send(&f.state, get("/api/beds/chair-1/export.csv")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()[header::CONTENT_DISPOSITION].to_str().unwrap().contains("vigil-chair-1-s-42.csv"));
    let text = String::from_utf8(axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[2].starts_with("time,kind,parameter,value"), "{text}");
    assert!(lines.iter().any(|l| l.contains(",vital,spo2,85,%,valid")), "{text}");
    assert!(
        lines.iter().any(|l| l.contains(",alarm,spo2,85,%,high/update/acknowledged,SpO2 85 < 88,nina,a-1")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.contains(",action,,,,ok,") && l.contains("acknowledge") && l.ends_with(",nina,")),
        "{text}"
    );
    assert!(lines.iter().any(|l| l.contains(",refused: no infusion is running,")), "{text}");
    assert!(lines.iter().any(|l| l.contains(",session,") && l.contains("session_start")), "{text}");

    let res = send(&f.state, get("/api/beds/chair-1/history?from=2030-01-01T00:00:00Z&to=2029-01-01T00:00:00Z")).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // The window is bounded.
    let res = send(&f.state, get("/api/beds/chair-1/export.csv?from=1970-01-01T00:00:00Z")).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(body_json(res).await["error"].as_str().unwrap().contains("longer than 24 h"));
}

#[tokio::test]
async fn a_foreign_host_header_gets_421_on_every_route_and_loopback_names_and_allowed_hosts_pass() {
    let f = fixture_with(true, true);
    for (method, path) in
        [("GET", "/"), ("GET", "/api/me"), ("GET", "/api/snapshot"), ("POST", "/api/beds/chair-1/commands")]
    {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "evil.example:8080")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"command":"acknowledge"}"#))
            .unwrap();
        let res = send(&f.state, req).await;
        assert_eq!(res.status(), StatusCode::MISDIRECTED_REQUEST, "{method} {path}");
    }
    let listen: SocketAddr = "10.0.0.5:8080".parse().unwrap();
    for ok in ["localhost:8080", "127.0.0.1", "[::1]:8080", "10.0.0.5:8080", "Vigil.Ward.Example", "app.localhost"] {
        assert!(auth::host_allowed(Some(ok), &listen, &["vigil.ward.example".into()]), "{ok}");
    }
    for bad in ["evil.example", "10.0.0.6:8080", "127.0.0.1.evil.example", ""] {
        assert!(!auth::host_allowed(Some(bad), &listen, &["vigil.ward.example".into()]), "{bad}");
    }
}

#[tokio::test]
async fn the_dashboard_applies_the_same_command_validation_as_mqtt() {
    let f = fixture_with(true, true);
    let me = body_json(send(&f.state, Request::get("/api/me").body(Body::empty()).unwrap()).await).await;
    let csrf = me["csrf"].as_str().unwrap().to_owned();
    let huge = format!(r#"{{"command":"session_start","patient":"{}"}}"#, "P".repeat(1 << 20));
    for body in [
        huge.as_str(),
        r#"{"command":"pause_audio","seconds":601}"#,
        r#"{"command":"set_baseline","sys":80,"dia":120}"#,
    ] {
        let req = Request::post("/api/beds/chair-1/commands")
            .header(header::CONTENT_TYPE, "application/json")
            .header(auth::CSRF_HEADER, csrf.clone())
            .body(Body::from(body.to_owned()))
            .unwrap();
        let res = send(&f.state, req).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{}", &body[..body.len().min(60)]);
    }
}

#[tokio::test]
async fn limits_come_from_each_beds_profile_can_be_replaced_and_are_optional() {
    let f = fixture();
    let get = |state: &DashboardState, bed: &str| {
        let req = Request::get(format!("/api/beds/{bed}/limits")).body(Body::empty()).unwrap();
        let state = state.clone();
        async move { body_json(send(&state, req).await).await }
    };
    let doc = get(&f.state, "chair-1").await;
    assert_eq!(doc["limits"]["profile"], "ketamine-chair");
    assert_eq!(doc["limits"]["rise_sys"], 40.0);
    // chair-2 is on the hub but has no configured profile to read: the chart simply has no limits.
    let doc = get(&f.state, "chair-2").await;
    assert_eq!(doc["limits"], serde_json::Value::Null);
    assert_eq!(doc["profile"], "ketamine-chair");

    let replaced = ChairLimits {
        profile: "ketamine-chair".into(),
        bands: vec![LimitBand { parameter: Parameter::Spo2, priority: Priority::High, low: Some(85.0), high: None }],
        rise_sys: None,
        rise_dia: None,
    };
    let state = f.state.with_limits("chair-1", replaced);
    let doc = get(&state, "chair-1").await;
    assert_eq!(doc["limits"]["bands"][0]["low"], 85.0);
    assert_eq!(doc["limits"]["bands"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_nurse_cannot_override_limits_from_the_dashboard() {
    let f = fixture();
    let (_, cookie, me) = sign_in(&f.state, "nina", "nurse-pass").await;
    let req = Request::post("/api/beds/chair-1/commands")
        .header(header::COOKIE, cookie_pair(&cookie.unwrap()))
        .header(auth::CSRF_HEADER, me["csrf"].as_str().unwrap())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"command":"set_limit","key":"limits.spo2.low.high","value":80}"#))
        .unwrap();
    let res = send(&f.state, req).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(body_json(res).await["error"].as_str().unwrap().contains("override alarm limits"));
    let mut commands = f.commands;
    assert!(commands.try_recv().is_err(), "the command reached the bed");
}

#[test]
fn profile_limits_become_chart_bands() {
    let limits = ChairLimits::from_profile(&crate::alarm::profile::Profile::ketamine_chair());
    assert_eq!(limits.profile, "ketamine-chair");
    let spo2_high = limits.bands.iter().find(|b| b.parameter == Parameter::Spo2 && b.priority == Priority::High);
    assert_eq!(spo2_high.and_then(|b| b.low), Some(88.0));
    let sys_medium = limits.bands.iter().find(|b| b.parameter == Parameter::NibpSys && b.priority == Priority::Medium);
    assert_eq!(sys_medium.and_then(|b| b.high), Some(160.0));
    assert_eq!((limits.rise_sys, limits.rise_dia), (Some(40.0), Some(25.0)));
}

#[tokio::test]
async fn the_status_endpoint_reports_the_mqtt_broker_link_so_its_loss_is_visible_on_the_ward() {
    let f = fixture();
    let get = || Request::get("/api/status").body(Body::empty()).unwrap();
    let res = send(&f.state, get()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_json(res).await["mqtt"], serde_json::Value::Null, "no MQTT link configured: nothing to show");

    let status = |state| crate::mqtt::LinkStatus {
        state,
        broker: "127.0.0.1:1883".into(),
        since: Utc::now(),
        last_error: (state != crate::mqtt::LinkState::Connected).then(|| "mqtt.host: connection refused".into()),
        birth_seq: 3,
        delivery: Default::default(),
    };
    let (tx, rx) = tokio::sync::watch::channel(status(crate::mqtt::LinkState::Connected));
    let state = f.state.clone().with_mqtt_link(rx);
    assert_eq!(body_json(send(&state, get()).await).await["mqtt"]["state"], "connected");
    tx.send(status(crate::mqtt::LinkState::Connecting)).unwrap();
    let json = body_json(send(&state, get()).await).await;
    assert_eq!(json["mqtt"]["state"], "connecting");
    assert_eq!(json["mqtt"]["last_error"], "mqtt.host: connection refused");
}

use crate::vitals::Timestamp;

/// The real store, counting the records it hands to the export.
struct CountingStore {
    store: crate::store::Store,
    passed: std::sync::atomic::AtomicU64,
}

impl History for CountingStore {
    fn vitals(&self, bed: &str, from: Timestamp, to: Timestamp) -> Result<Vec<VitalValue>, HistoryError> {
        History::vitals(&self.store, bed, from, to)
    }
    fn alarm_events(&self, bed: &str, from: Timestamp, to: Timestamp) -> Result<Vec<AlarmEvent>, HistoryError> {
        History::alarm_events(&self.store, bed, from, to)
    }
    fn session_events(
        &self,
        bed: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<crate::event::SessionEvent>, HistoryError> {
        History::session_events(&self.store, bed, from, to)
    }
    fn actions(&self, bed: &str, from: Timestamp, to: Timestamp) -> Result<Vec<ActionRecord>, HistoryError> {
        History::actions(&self.store, bed, from, to)
    }
    fn latest_session(&self, bed: &str) -> Result<Option<SessionSummary>, HistoryError> {
        History::latest_session(&self.store, bed)
    }
    fn for_each_record(
        &self,
        bed: &str,
        from: Timestamp,
        to: Timestamp,
        actions: bool,
        each: &mut dyn FnMut(history::HistoryRecord) -> bool,
    ) -> Result<u64, HistoryError> {
        History::for_each_record(&self.store, bed, from, to, actions, &mut |r| {
            self.passed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            each(r)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_export_streams_through_a_bounded_channel_and_its_first_bytes_arrive_before_the_query_ends() {
    use std::sync::atomic::Ordering;
    const ROWS: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(&dir.path().join("vigil.db")).unwrap();
    let now = Utc::now();
    let start = now - chrono::Duration::seconds(ROWS as i64 / 4 + 10);
    let events: Vec<Event> = (0..ROWS as i64 / 4)
        .map(|i| {
            let time = start + chrono::Duration::seconds(i);
            let value = |parameter, v| VitalValue { parameter, value: Some(v), status: ValueStatus::Valid, time };
            Event::Vitals(VitalsUpdate {
                bed: "chair-1".into(),
                time,
                values: vec![
                    value(Parameter::Spo2, 97.0),
                    value(Parameter::Pr, 71.0),
                    value(Parameter::Hr, 72.0),
                    value(Parameter::Rr, 14.0),
                ],
                other: Vec::new(),
            })
        })
        .collect();
    store.append(&events).unwrap();
    store.flush().unwrap();
    let history = Arc::new(CountingStore { store, passed: Default::default() });
    let hub = hub();
    let state = DashboardState::new(hub, config(true, false, "127.0.0.1:8080"), history.clone()).unwrap();
    let (_, cookie, _) = sign_in(&state, "vic", "viewer-pass").await;
    let window = |t: Timestamp| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let path = format!("/api/beds/chair-1/export.csv?from={}&to={}", window(start), window(now));
    let req = Request::get(path).header(header::COOKIE, cookie_pair(&cookie.unwrap())).body(Body::empty()).unwrap();
    let res = send(&state, req).await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body().into_data_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"# Vigil session export"), "{:?}", &first[..40]);

    // The reader holds the first chunk and reads no more: the store thread can be at most the channel's chunks,
    // the one it is sending and the one it is filling ahead, far fewer than the export's rows.
    let per_chunk = (super::export::CHUNK_BYTES / 40 + 1) as u64;
    let bound = (super::export::CHANNEL_CHUNKS as u64 + 3) * per_chunk;
    let passed = history.passed.load(Ordering::SeqCst);
    assert!(bound < ROWS, "the test needs more rows than the channel holds ({bound})");
    assert!(passed <= bound, "{passed} rows read with only the first chunk taken (bound {bound})");

    // The rest arrives in full.
    let mut lines = first.iter().filter(|b| **b == b'\n').count() as u64;
    while let Some(chunk) = body.next().await {
        lines += chunk.unwrap().iter().filter(|b| **b == b'\n').count() as u64;
    }
    assert_eq!(lines, ROWS + 3, "three header lines and one per vital");
    assert_eq!(history.passed.load(Ordering::SeqCst), ROWS);
}
