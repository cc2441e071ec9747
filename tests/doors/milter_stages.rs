//! In-process stage tests: an indymilter-test client plays the MTA against the real milter door
//! and engine, each test with its own small config.

use std::net::SocketAddr;

use indymilter_test::{MacroStage, ProtoOpts, Status, TestConnection};
use postern::app::App;
use postern::config::Config;
use postern::milter::socket::{ListenSocket, MilterListener};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Milter {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Milter {
    async fn start(config: &str) -> Self {
        let config = Config::parse(config, "test.toml").expect("test config is valid");
        let (app, settings, _) =
            App::new(config, postern::engine::events::DoorKind::Milter).expect("the engine starts");
        let engine = app.engine.clone();
        let spec = ListenSocket::Inet {
            host: "127.0.0.1".into(),
            port: 0,
        };
        let (listener, stop) = MilterListener::bind(&spec, 0o600).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            postern::milter::serve(engine, &settings, listener, stop, shutdown).await
        });
        Self {
            addr,
            shutdown: Some(tx),
            task,
        }
    }

    async fn open(&self) -> TestConnection {
        TestConnection::open(self.addr).await.unwrap()
    }

    async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

fn client(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), 40000)
}

fn reply_text(status: &Status) -> String {
    match status {
        Status::Reject { message: Some(m) } | Status::Tempfail { message: Some(m) } => {
            m.to_string_lossy().into_owned()
        }
        other => panic!("expected a refusal with a reply, got {other:?}"),
    }
}

/// A whole message; the MTA does not wait for answers to header, end of header and body, nor
/// to DATA when the policy refuses nothing there.
async fn send_message(conn: &mut TestConnection) -> (indymilter_test::EomActions, Status) {
    assert_eq!(
        conn.mail(["<a@sender.example>"]).await.unwrap(),
        Status::Continue
    );
    assert_eq!(
        conn.rcpt(["<b@rcpt.example>"]).await.unwrap(),
        Status::Continue
    );
    let data = if conn.negotiated_opts().contains(ProtoOpts::NOREPLY_DATA) {
        Status::Noreply
    } else {
        Status::Continue
    };
    assert_eq!(conn.data().await.unwrap(), data);
    assert_eq!(
        conn.header("Subject", " hello").await.unwrap(),
        Status::Noreply
    );
    assert_eq!(conn.eoh().await.unwrap(), Status::Noreply);
    assert_eq!(conn.body("body line\r\n").await.unwrap(), Status::Noreply);
    conn.eom().await.unwrap()
}

#[tokio::test]
async fn clean_message_passes_without_edits() {
    let milter = Milter::start("").await;
    let mut conn = milter.open().await;
    assert!(
        conn.requested_macros()[&MacroStage::Connect]
            .to_str()
            .unwrap()
            .contains("{client_addr}")
    );
    assert!(
        conn.requested_macros()[&MacroStage::Helo]
            .to_str()
            .unwrap()
            .contains("{tls_version}")
    );
    assert!(conn.negotiated_opts().contains(ProtoOpts::LEADING_SPACE));
    assert_eq!(
        conn.connect("client.example", client("198.51.100.1"))
            .await
            .unwrap(),
        Status::Noreply
    );
    assert_eq!(conn.helo("client.example").await.unwrap(), Status::Continue);
    let (actions, status) = send_message(&mut conn).await;
    assert_eq!(status, Status::Continue);
    assert!(
        actions.actions.is_empty(),
        "untouched message gets no edits: {actions:?}"
    );
    conn.close().await.unwrap();
    milter.stop().await;
}

/// Postfix replaces a reply given at connect with its own text, so the refusal comes at HELO.
#[tokio::test]
async fn rejected_ip_gets_configured_reply_at_helo() {
    let milter = Milter::start(
        r#"
        [connection]
        ip_address_rejection = ["192.0.2.0/24", "2001:db8::/32"]
        ip_address_rejection_reply = "550 5.7.1 You are not welcome here"
        "#,
    )
    .await;
    let mut conn = milter.open().await;
    let status = conn
        .connect("bad.example", client("192.0.2.10"))
        .await
        .unwrap();
    assert_eq!(
        status,
        Status::Noreply,
        "Postfix does not wait for an answer at connect"
    );
    let status = conn.helo("bad.example").await.unwrap();
    assert_eq!(reply_text(&status), "550 5.7.1 You are not welcome here");

    // A client that never says HELO is refused at MAIL.
    let mut no_helo = milter.open().await;
    no_helo
        .connect("bad.example", client("192.0.2.11"))
        .await
        .unwrap();
    let status = no_helo.mail(["<a@sender.example>"]).await.unwrap();
    assert_eq!(reply_text(&status), "550 5.7.1 You are not welcome here");

    let mut conn6 = milter.open().await;
    conn6
        .connect("bad6.example", client("2001:db8::25"))
        .await
        .unwrap();
    let status = conn6.helo("bad6.example").await.unwrap();
    assert!(reply_text(&status).starts_with("550 5.7.1"));

    let mut good = milter.open().await;
    good.connect("good.example", client("198.51.100.7"))
        .await
        .unwrap();
    assert_eq!(good.helo("good.example").await.unwrap(), Status::Continue);
    milter.stop().await;
}

/// The MTA is asked to wait for an answer only where the policy in force may refuse: each
/// stage it need not wait for saves a round trip per message.
#[tokio::test]
async fn the_mta_waits_only_where_the_policy_may_refuse() {
    const WAITS: [ProtoOpts; 5] = [
        ProtoOpts::NOREPLY_HELO,
        ProtoOpts::NOREPLY_MAIL,
        ProtoOpts::NOREPLY_RCPT,
        ProtoOpts::NOREPLY_DATA,
        ProtoOpts::NOREPLY_UNKNOWN,
    ];
    let silent = |conn: &TestConnection| -> Vec<ProtoOpts> {
        WAITS
            .into_iter()
            .filter(|o| conn.negotiated_opts().contains(*o))
            .collect()
    };
    // The default policy: connect checks (reputation, DoS limits) answered at HELO, the limit
    // of invalid commands; nothing refuses at DATA.
    let milter = Milter::start("").await;
    let conn = milter.open().await;
    assert_eq!(silent(&conn), [ProtoOpts::NOREPLY_DATA]);
    assert_eq!(
        conn.requested_macros()[&MacroStage::Connect]
            .to_str()
            .unwrap(),
        "{client_addr}",
        "only the macros Postern reads"
    );
    conn.close().await.unwrap();
    milter.stop().await;

    // Nothing refuses at connect or for unknown commands: HELO and unknown commands are heard
    // without an answer too.
    let milter = Milter::start(
        "[reputation]\nenabled = false\n[dos_protection]\nenabled = false\n\
         [exploit_detection]\ndrop_on_invalid_commands = false\n",
    )
    .await;
    let mut conn = milter.open().await;
    assert_eq!(
        silent(&conn),
        [
            ProtoOpts::NOREPLY_HELO,
            ProtoOpts::NOREPLY_DATA,
            ProtoOpts::NOREPLY_UNKNOWN
        ]
    );
    conn.connect("client.example", client("198.51.100.1"))
        .await
        .unwrap();
    assert_eq!(conn.helo("client.example").await.unwrap(), Status::Noreply);
    assert_eq!(conn.unknown("XYZZY").await.unwrap(), Status::Noreply);
    let (_, status) = send_message(&mut conn).await;
    assert_eq!(status, Status::Continue);
    milter.stop().await;

    // A refusal held until DATA: the MTA waits at DATA, and hears the refusal there.
    let milter = Milter::start(
        "[connection]\ndelayed_rejection_state = \"data\"\nip_address_rejection = [\"192.0.2.10\"]\n",
    )
    .await;
    let mut conn = milter.open().await;
    assert_eq!(silent(&conn), [ProtoOpts::NOREPLY_HELO]);
    conn.connect("bad.example", client("192.0.2.10"))
        .await
        .unwrap();
    assert_eq!(conn.helo("bad.example").await.unwrap(), Status::Noreply);
    conn.mail(["<a@sender.example>"]).await.unwrap();
    conn.rcpt(["<b@rcpt.example>"]).await.unwrap();
    let status = conn.data().await.unwrap();
    assert!(
        reply_text(&status).starts_with("554 5.7.1 Client host rejected"),
        "{status:?}"
    );
    milter.stop().await;

    // An encryption rule that requires TLS for the whole transaction may refuse DATA.
    let milter = Milter::start(
        "[[encryption_rule]]\nsender_domain = \"partner.example\"\n\
         sender_encryption = \"required\"\nrequire_tls_for_whole_transaction = true\n",
    )
    .await;
    let conn = milter.open().await;
    assert!(!silent(&conn).contains(&ProtoOpts::NOREPLY_DATA));
    conn.close().await.unwrap();
    milter.stop().await;
}

#[tokio::test]
async fn delayed_rejection_is_delivered_at_rcpt() {
    let milter = Milter::start(
        r#"
        [connection]
        delayed_rejection_state = "rcpt"
        ip_address_rejection = ["192.0.2.10"]
        "#,
    )
    .await;
    let mut conn = milter.open().await;
    assert_eq!(
        conn.connect("bad.example", client("192.0.2.10"))
            .await
            .unwrap(),
        Status::Noreply
    );
    // The refusal is held until RCPT, so the MTA is not asked to wait at HELO.
    assert_eq!(conn.helo("bad.example").await.unwrap(), Status::Noreply);
    assert_eq!(
        conn.mail(["<a@sender.example>"]).await.unwrap(),
        Status::Continue
    );
    let status = conn.rcpt(["<b@rcpt.example>"]).await.unwrap();
    assert!(
        reply_text(&status).starts_with("554 5.7.1 Client host rejected"),
        "{status:?}"
    );
    // Every further recipient gets the same answer.
    let status = conn.rcpt(["<c@rcpt.example>"]).await.unwrap();
    assert!(reply_text(&status).starts_with("554 5.7.1"));
    conn.abort().await.unwrap();
    conn.close().await.unwrap();
    milter.stop().await;
}

#[tokio::test]
async fn invalid_commands_drop_the_client_at_the_limit() {
    let milter = Milter::start("[exploit_detection]\nmax_invalid_commands = 3\n").await;
    let mut conn = milter.open().await;
    conn.connect("c.example", client("198.51.100.1"))
        .await
        .unwrap();
    assert_eq!(conn.unknown("FOO").await.unwrap(), Status::Continue);
    assert_eq!(conn.unknown("BAR x").await.unwrap(), Status::Continue);
    let status = conn.unknown("BAZ").await.unwrap();
    assert!(matches!(status, Status::Tempfail { .. }));
    assert!(reply_text(&status).starts_with("421 4.7.0"), "{status:?}");
    milter.stop().await;
}

#[tokio::test]
async fn trace_header_names_the_verdict() {
    let milter = Milter::start(
        "hostname = \"mx.test\"\n[scan]\ntrace_header = true\ntrace_header_name = \"X-Trace\"\n",
    )
    .await;
    let mut conn = milter.open().await;
    conn.connect("c.example", client("198.51.100.1"))
        .await
        .unwrap();
    let (actions, status) = send_message(&mut conn).await;
    assert_eq!(status, Status::Continue);
    assert!(
        actions.has_add_header("X-Trace", " continue; by mx.test"),
        "{actions:?}"
    );
    milter.stop().await;
}

#[tokio::test]
async fn oversized_message_is_refused_with_552() {
    let milter = Milter::start("[scan]\nmax_message_size = 100\nmessage_memory_limit = 10\n").await;
    let mut conn = milter.open().await;
    conn.connect("c.example", client("198.51.100.1"))
        .await
        .unwrap();
    conn.mail(["<a@sender.example>"]).await.unwrap();
    conn.rcpt(["<b@rcpt.example>"]).await.unwrap();
    conn.data().await.unwrap();
    conn.header("Subject", " big").await.unwrap();
    conn.eoh().await.unwrap();
    assert_eq!(conn.body(vec![b'x'; 200]).await.unwrap(), Status::Noreply);
    let (_, status) = conn.eom().await.unwrap();
    assert!(reply_text(&status).starts_with("552 5.3.4"), "{status:?}");
    milter.stop().await;
}

/// A milter whose spool directory disappears under it (a cleaner, a full disk...): no message
/// over 10 bytes can be held.
async fn milter_with_vanished_spool(scan_settings: &str) -> Milter {
    let spool = tempfile::tempdir().unwrap();
    let config = format!(
        "[scan]\n{scan_settings}message_memory_limit = 10\nspool_directory = {:?}\n",
        spool.path()
    );
    let milter = Milter::start(&config).await;
    drop(spool);
    milter
}

#[tokio::test]
async fn spool_failure_gets_the_scan_failure_action() {
    for (action, expect) in [
        (
            "delay",
            Some("451 4.3.0 Message could not be scanned, try again later"),
        ),
        ("reject", Some("554 5.3.0 Message could not be scanned")),
        ("allow", None),
    ] {
        let milter =
            milter_with_vanished_spool(&format!("scan_failure_action = {action:?}\n")).await;
        let mut conn = milter.open().await;
        conn.connect("c.example", client("198.51.100.1"))
            .await
            .unwrap();
        // Postfix does not wait for answers within the message; the refusal comes at its end.
        let (actions, status) = send_message(&mut conn).await;
        assert!(actions.actions.is_empty());
        match expect {
            Some(reply) => assert_eq!(reply_text(&status), reply, "{action}"),
            None => assert_eq!(status, Status::Continue, "allow lets the message through"),
        }
        milter.stop().await;
    }
}

/// An MTA that waits for an answer at every stage (no SMFIP_NR_* offered) hears the refusal
/// at the first stage after the failure.
#[tokio::test]
async fn refusal_comes_early_when_the_mta_waits_for_every_answer() {
    let milter = milter_with_vanished_spool("").await;
    let offered = ProtoOpts::all()
        - (ProtoOpts::NOREPLY_CONNECT
            | ProtoOpts::NOREPLY_HEADER
            | ProtoOpts::NOREPLY_EOH
            | ProtoOpts::NOREPLY_BODY);
    let mut conn = TestConnection::configure()
        .available_opts(offered)
        .open_tcp(milter.addr)
        .await
        .unwrap();
    let status = conn
        .connect("c.example", client("198.51.100.1"))
        .await
        .unwrap();
    assert_eq!(status, Status::Continue);
    conn.mail(["<a@sender.example>"]).await.unwrap();
    conn.rcpt(["<b@rcpt.example>"]).await.unwrap();
    conn.data().await.unwrap();
    let status = conn
        .header("Subject", " more than ten bytes")
        .await
        .unwrap();
    assert!(reply_text(&status).starts_with("451 4.3.0"), "{status:?}");
    milter.stop().await;
}

#[tokio::test]
async fn malformed_packet_closes_the_connection_and_the_milter_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let milter = Milter::start("").await;
    // An absurd packet length (2 GiB) must not make the milter allocate it.
    let mut raw = tokio::net::TcpStream::connect(milter.addr).await.unwrap();
    raw.write_all(&0x8000_0000u32.to_be_bytes()).await.unwrap();
    raw.write_all(b"O").await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), raw.read(&mut buf))
        .await
        .expect("milter closes the connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing is answered to a malformed packet");
    // Garbage command byte.
    let mut raw = tokio::net::TcpStream::connect(milter.addr).await.unwrap();
    raw.write_all(&[0, 0, 0, 1, b'#']).await.unwrap();
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), raw.read(&mut buf))
        .await
        .expect("milter closes the connection")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // Still serving.
    let mut conn = milter.open().await;
    assert_eq!(
        conn.connect("c.example", client("198.51.100.1"))
            .await
            .unwrap(),
        Status::Noreply
    );
    milter.stop().await;
}

#[tokio::test]
async fn shutdown_waits_for_the_message_in_flight() {
    let milter = Milter::start("").await;
    let mut conn = milter.open().await;
    conn.connect("c.example", client("198.51.100.1"))
        .await
        .unwrap();
    conn.mail(["<a@sender.example>"]).await.unwrap();
    conn.rcpt(["<b@rcpt.example>"]).await.unwrap();
    let Milter {
        addr,
        mut shutdown,
        task,
    } = milter;
    shutdown.take().unwrap().send(()).unwrap();
    // Once the listener is closed the shutdown has begun; only then is "still running" a
    // finding (a fixed pause would prove nothing on a slow machine).
    let stopping = async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), stopping)
        .await
        .expect("no new connections once stopping");
    assert!(
        !task.is_finished(),
        "milter waits for the message in flight"
    );
    conn.data().await.unwrap();
    conn.header("Subject", " x").await.unwrap();
    conn.eoh().await.unwrap();
    conn.body("b\r\n").await.unwrap();
    let (_, status) = conn.eom().await.unwrap();
    assert_eq!(
        status,
        Status::Continue,
        "in-flight message finishes normally"
    );
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .expect("milter exits once idle")
        .unwrap()
        .unwrap();
}

/// The address transformation's envelope changes reach the MTA as CHGFROM and DELRCPT +
/// ADDRCPT; an MTA that does not grant those actions gets the scan failure action, never the
/// message relayed with its addresses unchanged against the rules.
#[tokio::test]
async fn envelope_changes_need_the_actions_the_mta_grants() {
    let config = "[[address_transformation]]\nmatch = \"@sender.example\"\nreplace = \"@public.example\"\n\
                  [[address_transformation]]\napplies_to = [\"recipients\"]\n\
                  match = \"b@rcpt.example\"\nreplace = \"c@rcpt.example\"\n";
    let milter = Milter::start(config).await;
    let mut conn = milter.open().await;
    conn.connect("c.example", client("127.0.0.1"))
        .await
        .unwrap();
    let (actions, status) = send_message(&mut conn).await;
    assert_eq!(status, Status::Continue);
    assert!(actions.has_change_sender("<a@public.example>", None::<&str>));
    assert!(actions.has_delete_recipient("<b@rcpt.example>"));
    assert!(actions.has_add_recipient("<c@rcpt.example>", None::<&str>));

    let offered = indymilter_test::Actions::ADD_HEADER
        | indymilter_test::Actions::CHANGE_HEADER
        | indymilter_test::Actions::REPLACE_BODY;
    let mut conn = TestConnection::configure()
        .available_actions(offered)
        .open_tcp(milter.addr)
        .await
        .unwrap();
    conn.connect("c.example", client("127.0.0.1"))
        .await
        .unwrap();
    let (actions, status) = send_message(&mut conn).await;
    assert!(reply_text(&status).starts_with("451 4.3.0"), "{status:?}");
    assert!(!actions.has_change_sender("<a@public.example>", None::<&str>));
    milter.stop().await;
}

/// An envelope address with CR LF (or any control character) handed over by the MTA is
/// refused: written into a relay command it would start a command of its own (a divert or
/// fallback delivery would carry an injected RCPT). Refused in a dry run too.
#[tokio::test]
async fn addresses_with_control_characters_are_refused() {
    for config in ["", "[scan]\ndry_run = true\n"] {
        let milter = Milter::start(config).await;
        let mut conn = milter.open().await;
        conn.connect("client.example", client("198.51.100.1"))
            .await
            .unwrap();
        assert_eq!(conn.helo("client.example").await.unwrap(), Status::Continue);
        let status = conn
            .mail(["<a@sender.example>\r\nRCPT TO:<evil@other.example>"])
            .await
            .unwrap();
        let text = reply_text(&status);
        assert!(
            text.starts_with("501 5.1.7 Bad sender address syntax") && text.contains("'\\r'"),
            "{config:?}: {text}"
        );
        assert_eq!(
            conn.mail(["<a@sender.example>"]).await.unwrap(),
            Status::Continue
        );
        let status = conn
            .rcpt(["<b@rcpt.example>\u{1b}]0;x\u{7}"])
            .await
            .unwrap();
        let text = reply_text(&status);
        assert!(
            text.starts_with("501 5.1.3 Bad recipient address syntax"),
            "{config:?}: {text}"
        );
        assert_eq!(
            conn.rcpt(["<b@rcpt.example>"]).await.unwrap(),
            Status::Continue
        );
        conn.close().await.unwrap();
        milter.stop().await;
    }
}
