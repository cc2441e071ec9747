//! A scriptable SMTP relay target for the faults no real server produces on demand: it closes
//! at the N-th RCPT, stalls before a reply, refuses chosen recipients, answers the end of the
//! message late or never, idles out, and offers only the extensions a test names. It runs on
//! threads inside the test process, keeps what it received in memory (a message counts as
//! taken once its final dot arrived, as a real server commits it then) and stops when dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the target does wrong. `Faults::default()` is a well-behaved server.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Close the connection, without a reply, when the N-th RCPT (from 1, per connection)
    /// arrives.
    pub close_at_rcpt: Option<usize>,
    /// Wait this long before answering the N-th RCPT.
    pub stall_at_rcpt: Option<(usize, Duration)>,
    /// A full reply line for a chosen recipient (`"550 5.1.1 no such user"`).
    pub rcpt_replies: Vec<(&'static str, &'static str)>,
    /// A reply to the DATA command instead of 354.
    pub data_reply: Option<&'static str>,
    /// Close the connection when DATA arrives.
    pub close_at_data: bool,
    /// Wait this long before answering the end of the message (the message is taken).
    pub end_reply_delay: Option<Duration>,
    /// A reply to the end of the message instead of 250; the message is then not taken.
    pub end_reply: Option<&'static str>,
    /// Close after the final dot without answering (the message is taken).
    pub close_after_dot: bool,
    /// Close a connection that sent nothing for this long, as servers do (Postfix's
    /// smtpd_timeout), with 421 first.
    pub idle_timeout: Option<Duration>,
    /// EHLO keywords offered after the greeting line.
    pub extensions: Vec<&'static str>,
    /// A reply to XFORWARD instead of 250.
    pub xforward_reply: Option<&'static str>,
    /// A reply to MAIL instead of 250.
    pub mail_reply: Option<&'static str>,
    /// A reply to AUTH instead of 235 (offer `AUTH PLAIN` among the extensions).
    pub auth_reply: Option<&'static str>,
    /// The one user and password AUTH PLAIN and LOGIN accept (235); others get 535. Unset:
    /// any AUTH gets `auth_reply`.
    pub credentials: Option<(&'static str, &'static str)>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            close_at_rcpt: None,
            stall_at_rcpt: None,
            rcpt_replies: Vec::new(),
            data_reply: None,
            close_at_data: false,
            end_reply_delay: None,
            end_reply: None,
            close_after_dot: false,
            idle_timeout: None,
            extensions: vec![
                "PIPELINING",
                "SIZE 100000000",
                "8BITMIME",
                "SMTPUTF8",
                "ENHANCEDSTATUSCODES",
            ],
            xforward_reply: None,
            mail_reply: None,
            auth_reply: None,
            credentials: None,
        }
    }
}

/// One message the target took: XFORWARD and MAIL command lines as sent, the recipients it accepted and
/// the message with dot-stuffing removed.
#[derive(Clone, Debug)]
pub struct Taken {
    /// The connection's EHLO (or HELO) command line, as sent.
    pub ehlo: String,
    /// Where the connection came from.
    pub peer: std::net::SocketAddr,
    /// XFORWARD command lines of the transaction, as sent.
    pub xforward: Vec<String>,
    pub mail: String,
    /// Whether the first RCPT had already arrived (in the same write) when MAIL was read.
    pub rcpt_with_mail: bool,
    pub recipients: Vec<String>,
    pub message: Vec<u8>,
    /// The mechanism and user of a successful AUTH on the connection (with `credentials`).
    pub authenticated: Option<String>,
}

pub struct FaultyTarget {
    pub port: u16,
    taken: Arc<Mutex<Vec<Taken>>>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl FaultyTarget {
    /// Listens on a free loopback port and serves every connection with `faults`.
    pub fn start(faults: Faults) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let taken = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let workers = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (taken, connections, stop, workers) = (
                taken.clone(),
                connections.clone(),
                stop.clone(),
                workers.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(false).unwrap();
                            connections
                                .lock()
                                .unwrap()
                                .push(stream.try_clone().unwrap());
                            let (faults, taken) = (faults.clone(), taken.clone());
                            let worker = std::thread::spawn(move || {
                                // An I/O error ends the connection as a real server's would:
                                // the client closed or reset it, or a fault made it so.
                                // Anything else (a panic) fails the test at drop.
                                let _ = serve(stream, &faults, &taken);
                            });
                            workers.lock().unwrap().push(worker);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Self {
            port,
            taken,
            connections,
            stop,
            accept: Some(accept),
            workers,
        }
    }

    /// The connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.lock().unwrap().len()
    }

    /// The messages taken so far, in arrival order.
    pub fn taken(&self) -> Vec<Taken> {
        self.taken.lock().unwrap().clone()
    }
}

impl Drop for FaultyTarget {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.connections.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        // A panic in the target's own threads is a broken test: it fails the test (unless
        // the test is failing already) rather than passing silently.
        let mut panicked = self.accept.take().is_some_and(|a| a.join().is_err());
        for w in self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            panicked |= w.join().is_err();
        }
        if panicked && !std::thread::panicking() {
            panic!("a thread of the faulty target panicked (see its message above)");
        }
    }
}

/// One connection: a plain ESMTP server following `faults`. Errors end the connection.
fn serve(stream: TcpStream, faults: &Faults, taken: &Mutex<Vec<Taken>>) -> std::io::Result<()> {
    let peer = stream.peer_addr()?;
    let mut out = stream.try_clone()?;
    stream.set_read_timeout(faults.idle_timeout)?;
    let mut input = BufReader::new(stream);
    let say = |out: &mut TcpStream, line: &str| out.write_all(format!("{line}\r\n").as_bytes());
    say(&mut out, "220 faulty.postern.test ESMTP")?;
    let mut ehlo = String::new();
    let mut mail: Option<String> = None;
    let mut rcpt_with_mail = false;
    let mut xforward = Vec::new();
    let mut recipients = Vec::new();
    let mut rcpt_count = 0;
    let mut authenticated: Option<String> = None;
    loop {
        let mut line = String::new();
        match input.read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    say(
                        &mut out,
                        "421 4.4.2 faulty.postern.test Error: timeout exceeded",
                    )?;
                }
                return Err(e);
            }
        }
        let line = line.trim_end();
        let verb = line
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => {
                ehlo = line.to_owned();
                let mut reply = String::from("250-faulty.postern.test");
                for e in &faults.extensions {
                    reply.push_str("\r\n250-");
                    reply.push_str(e);
                }
                // The last line has a space after the code.
                let at = reply.rfind("250-").unwrap();
                reply.replace_range(at..at + 4, "250 ");
                say(&mut out, &reply)?;
            }
            "HELO" => {
                ehlo = line.to_owned();
                say(&mut out, "250 faulty.postern.test")?;
            }
            "AUTH" => match faults.credentials {
                None => say(
                    &mut out,
                    faults
                        .auth_reply
                        .unwrap_or("235 2.7.0 Authentication successful"),
                )?,
                Some(expected) => {
                    let given = read_credentials(line, &mut input, &mut out)?;
                    match given {
                        Some((mechanism, user, password))
                            if (user.as_str(), password.as_str()) == expected =>
                        {
                            authenticated = Some(format!("{mechanism} {user}"));
                            say(&mut out, "235 2.7.0 Authentication successful")?;
                        }
                        _ => say(&mut out, "535 5.7.8 Error: authentication failed")?,
                    }
                }
            },
            "XFORWARD" => {
                xforward.push(line.to_owned());
                say(&mut out, faults.xforward_reply.unwrap_or("250 2.0.0 Ok"))?;
            }
            "MAIL" => {
                recipients.clear();
                rcpt_with_mail = input.buffer().starts_with(b"RCPT");
                match faults.mail_reply {
                    Some(reply) => say(&mut out, reply)?,
                    None => {
                        mail = Some(line.to_owned());
                        say(&mut out, "250 2.1.0 Ok")?;
                    }
                }
            }
            "RCPT" if mail.is_none() => say(&mut out, "503 5.5.1 Error: need MAIL command")?,
            "RCPT" => {
                rcpt_count += 1;
                if faults.close_at_rcpt == Some(rcpt_count) {
                    return Ok(());
                }
                if let Some((n, pause)) = faults.stall_at_rcpt
                    && n == rcpt_count
                {
                    std::thread::sleep(pause);
                }
                let address = line
                    .split_once('<')
                    .and_then(|(_, rest)| rest.split_once('>'))
                    .map(|(a, _)| a.to_owned())
                    .unwrap_or_default();
                match faults.rcpt_replies.iter().find(|(a, _)| *a == address) {
                    Some((_, reply)) => say(&mut out, reply)?,
                    None => {
                        recipients.push(address);
                        say(&mut out, "250 2.1.5 Ok")?;
                    }
                }
            }
            "DATA" => {
                if faults.close_at_data {
                    return Ok(());
                }
                if let Some(reply) = faults.data_reply {
                    say(&mut out, reply)?;
                    continue;
                }
                say(&mut out, "354 End data with <CR><LF>.<CR><LF>")?;
                let message = read_message(&mut input)?;
                if faults.end_reply.is_none() {
                    taken.lock().unwrap().push(Taken {
                        ehlo: ehlo.clone(),
                        peer,
                        xforward: std::mem::take(&mut xforward),
                        mail: mail.clone().unwrap_or_default(),
                        rcpt_with_mail,
                        recipients: std::mem::take(&mut recipients),
                        message,
                        authenticated: authenticated.clone(),
                    });
                }
                if faults.close_after_dot {
                    return Ok(());
                }
                if let Some(pause) = faults.end_reply_delay {
                    std::thread::sleep(pause);
                }
                say(&mut out, faults.end_reply.unwrap_or("250 2.0.0 Ok: queued"))?;
                mail = None;
                rcpt_count = 0;
            }
            "RSET" => {
                mail = None;
                xforward.clear();
                recipients.clear();
                rcpt_count = 0;
                say(&mut out, "250 2.0.0 Ok")?;
            }
            "NOOP" => say(&mut out, "250 2.0.0 Ok")?,
            "QUIT" => {
                say(&mut out, "221 2.0.0 Bye")?;
                return Ok(());
            }
            _ => say(&mut out, "502 5.5.2 Error: command not recognized")?,
        }
    }
}

/// Reads up to the line holding only a dot, removing dot-stuffing.
fn read_message(input: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut message = Vec::new();
    loop {
        let mut line = Vec::new();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" {
            return Ok(message);
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        message.extend_from_slice(line);
    }
}

/// The mechanism, user and password of an `AUTH PLAIN` or `AUTH LOGIN` command (`line`),
/// asking for what the command did not carry; `None` for another mechanism or bad base64.
fn read_credentials(
    line: &str,
    input: &mut BufReader<TcpStream>,
    out: &mut TcpStream,
) -> std::io::Result<Option<(String, String, String)>> {
    use base64::Engine as _;
    let decode = |b64: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()
            .and_then(|v| String::from_utf8(v).ok())
    };
    let mut ask = |prompt: &str| -> std::io::Result<String> {
        out.write_all(format!("334 {prompt}\r\n").as_bytes())?;
        let mut answer = String::new();
        input.read_line(&mut answer)?;
        Ok(answer)
    };
    let mut words = line.split_whitespace().skip(1);
    let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
    let initial = words.next().map(str::to_owned);
    Ok(match mechanism.as_str() {
        "PLAIN" => {
            let response = match initial {
                Some(r) => r,
                None => ask("")?,
            };
            decode(&response).and_then(|text| {
                let mut parts = text.split('\0').skip(1);
                Some((
                    mechanism.clone(),
                    parts.next()?.to_owned(),
                    parts.next()?.to_owned(),
                ))
            })
        }
        "LOGIN" => {
            let user = match initial {
                Some(r) => r,
                None => ask("VXNlcm5hbWU6")?,
            };
            let password = ask("UGFzc3dvcmQ6")?;
            decode(&user)
                .zip(decode(&password))
                .map(|(u, p)| (mechanism.clone(), u, p))
        }
        _ => None,
    })
}
