//! Headless Chromium driven over WebDriver (the W3C protocol, JSON over HTTP/1.1) through
//! chromedriver, both from Debian's packages. A small client of its own: a session is a few
//! requests on loopback. Dropping the browser ends the session and stops chromedriver and
//! every process it started (its own process group).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium that accepts the test CA's certificates
    /// (`acceptInsecureCerts`: the console's HTTPS uses a certificate of the tests' own CA).
    pub fn start() -> Self {
        let port = super::free_port();
        let profile = tempfile::Builder::new()
            .prefix("postern-chromium.")
            .tempdir()
            .unwrap();
        // HOME in the profile: what Chromium writes of its own (crash reports, caches) goes
        // where the test removes it.
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("HOME", profile.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver runs (integration/install-deps installs chromium-driver)");
        let mut browser = Self {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-crash-reporter",
            "--disable-breakpad",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let answer = browser.request(
            "POST",
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "acceptInsecureCerts": true,
                "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
            }}})),
        );
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_owned();
        browser
    }

    /// One WebDriver request; its `value`. A WebDriver error fails the test.
    fn request(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let (head, payload) = read_response(&mut stream);
        let payload = payload.as_str();
        let value: Value = serde_json::from_str(payload)
            .unwrap_or_else(|e| panic!("WebDriver answered {head}\n{payload}: {e}"));
        if value["value"]["error"].is_string() {
            panic!("WebDriver {method} {path}: {}", value["value"]);
        }
        value["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url` and waits for the page to load.
    pub fn go(&self, url: &str) {
        self.request(
            "POST",
            &self.session_path("/url"),
            Some(json!({ "url": url })),
        );
    }

    pub fn url(&self) -> String {
        self.request("GET", &self.session_path("/url"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element `css` selects (the first), or `None`.
    pub fn find(&self, css: &str) -> Option<String> {
        let found = self.request(
            "POST",
            &self.session_path("/elements"),
            Some(json!({"using": "css selector", "value": css})),
        );
        found.as_array()?.first()?[ELEMENT]
            .as_str()
            .map(str::to_owned)
    }

    fn element(&self, css: &str) -> String {
        self.find(css).unwrap_or_else(|| {
            panic!(
                "no element {css:?} on {}:\n{}",
                self.url(),
                self.text("body")
            )
        })
    }

    /// The text of the element `css` selects, as shown.
    pub fn text(&self, css: &str) -> String {
        let Some(id) = self.find(css) else {
            return String::new();
        };
        self.request(
            "GET",
            &self.session_path(&format!("/element/{id}/text")),
            None,
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Waits (10 s at most) until the element `css` selects shows `needle`: a page a click
    /// or a script's submit loads may come after the click returns. Its text.
    pub fn wait_for(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text(css);
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {needle:?} on {}:\n{}",
                self.url(),
                self.text("body")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `text` into the field `css` selects, after clearing it.
    pub fn fill(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.request(
            "POST",
            &self.session_path(&format!("/element/{id}/clear")),
            Some(json!({})),
        );
        self.request(
            "POST",
            &self.session_path(&format!("/element/{id}/value")),
            Some(json!({ "text": text })),
        );
    }

    /// Clicks the element `css` selects (a submit button waits for the next page).
    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.request(
            "POST",
            &self.session_path(&format!("/element/{id}/click")),
            Some(json!({})),
        );
    }

    /// Runs `script` in the page; what it returns.
    pub fn run(&self, script: &str) -> Value {
        self.request(
            "POST",
            &self.session_path("/execute/sync"),
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Saves a PNG of the window in `path`.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let png = self.request("GET", &self.session_path("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

/// One HTTP response: its head, and its body (by Content-Length, or chunked), read without
/// waiting for the connection to close (chromedriver keeps it open).
fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "chromedriver closed the connection without an answer"
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut body = buf[head_end + 4..].to_vec();
    let lower = head.to_lowercase();
    let length = lower.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    match length {
        Some(length) => {
            while body.len() < length {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "chromedriver closed the connection mid-answer");
                body.extend_from_slice(&chunk[..n]);
            }
        }
        None => {
            while !body.ends_with(b"0\r\n\r\n") {
                let n = stream.read(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body = dechunked(&String::from_utf8_lossy(&body)).into_bytes();
        }
    }
    (head, String::from_utf8_lossy(&body).into_owned())
}

/// A chunked body, decoded.
fn dechunked(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = self.session_path("");
            // Ends Chromium; a failure here must not hide the test's own.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.request("DELETE", &path, None)
            }));
        }
        // chromedriver and whatever it started are in its process group.
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}
