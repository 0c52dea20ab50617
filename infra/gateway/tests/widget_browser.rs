//! The chat widget in a real headless browser (Debian's chromium, driven
//! by infra/stack/widget_browser.py with selenium): a page on an allowed
//! origin loads `/widget.js` from the gateway, asks a question and shows
//! the cited answer; a page on another origin is refused politely. The
//! screenshot is left in `.local/artifacts/widget.png`.
//!
//! Under infra/test.sh (`RAGWAY_BROWSER=required`) a missing browser or
//! driver fails the test; elsewhere it skips, saying what is missing.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

use serde_json::{Value, json};
use sqlx::PgPool;

mod support;
use support::{config, gateway, state};

const FACT: &str = "Paris is the capital of France. It lies on the Seine.";

/// Serves `pages` (path, HTML) and 404 elsewhere from a thread of its
/// own: the browser is the only client, one request at a time.
fn host_pages(listener: TcpListener, pages: Vec<(&'static str, String)>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 2048];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let page = pages
                .iter()
                .find(|(path, _)| request.starts_with(format!("GET {path} ").as_bytes()));
            let (status, body) = match page {
                Some((_, html)) => ("200 OK", html.as_str()),
                None => ("404 Not Found", ""),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

/// A site's page with the widget's tag; `stream_api` overrides where the
/// streamed chat goes.
fn page(api: &str, widget: &str, stream_api: Option<&str>) -> String {
    let stream = stream_api
        .map(|url| format!(" data-stream-api=\"{url}\""))
        .unwrap_or_default();
    // The host's own CSS tries to restyle everything: the shadow root keeps
    // the widget as it is.
    format!(
        "<!doctype html><html><head><title>A site</title><link rel=\"icon\" href=\"data:,\">\
         <style>*{{font-family:serif!important;color:red!important}}button{{display:none!important}}</style>\
         </head><body><h1>A site with a chat widget</h1>\
         <script src=\"{api}/widget.js\" data-widget=\"{widget}\" data-api=\"{api}\"{stream} async></script>\
         </body></html>"
    )
}

/// Runs the driver; None (after saying why, loudly) when the browser or
/// the driver is missing and the run does not require them.
async fn drive(args: Vec<String>) -> Option<Value> {
    let root = support::repo_root();
    let venv = root.join(".local/venv/bin/python");
    let python = if venv.exists() {
        venv.into_os_string()
    } else {
        "python3".into()
    };
    let script = root.join("infra/stack/widget_browser.py");
    let output =
        tokio::task::spawn_blocking(move || Command::new(python).arg(script).args(args).output())
            .await
            .unwrap();
    let required = std::env::var("RAGWAY_BROWSER").as_deref() == Ok("required");
    let missing = match &output {
        Err(e) => Some(format!("python could not start: {e}")),
        Ok(out) if out.status.code() == Some(3) => {
            Some(String::from_utf8_lossy(&out.stdout).into())
        }
        Ok(_) => None,
    };
    if let Some(what) = missing {
        let say = format!(
            "widget_browser: NO HEADLESS BROWSER: {what}\n\
             install: apt-get install -y chromium chromium-driver && \
             .local/venv/bin/pip install -r infra/stack/browser-requirements.txt \
             (infra/test.sh does both)"
        );
        assert!(!required, "{say}");
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        eprintln!("!!! {say}");
        eprintln!("!!! SKIPPING the browser test (RAGWAY_BROWSER=required makes it fail)");
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        return None;
    }
    let out = output.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "driver exited {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}")))
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_page_on_an_allowed_origin_gets_cited_answers_and_others_are_refused(pool: PgPool) {
    let probe = state(pool.clone(), config(&[]));
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let queue = support::test_queue(&probe, "widget", &suffix).await;
    // Tokens shorter-lived than the widget's renewal margin (a minute):
    // every question renews first, and must keep the visitor.
    let state = state(
        pool,
        config(&[
            ("INGEST_QUEUE_URL", queue.as_str()),
            ("EMBED_TOKEN_TTL_SECONDS", "30"),
        ]),
    );
    let api = gateway(state.clone()).await;
    let (token, _, _) = api.signup("site-owner@example.com").await;
    let ws = api.create_workspace(&token, "Atlas").await;
    let created = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/documents"),
            Some(&token),
            Some(json!({ "title": "France", "content": FACT, "content_type": "text/plain" })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(support::drain(&state, &queue).await.failed, 0);

    // Two sites; the widget allows the first only. The second differs by
    // host name and port, as another site would.
    let site_a = TcpListener::bind("127.0.0.1:0").unwrap();
    let site_b = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://127.0.0.1:{}", site_a.local_addr().unwrap().port());
    let other = format!("http://localhost:{}", site_b.local_addr().unwrap().port());
    let widget = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/widgets"),
            Some(&token),
            Some(json!({
                "name": "Atlas help",
                "allowed_origins": [origin],
                "greeting": "Hello! Ask me about France.",
                "theme_color": "#0a7d52",
            })),
        )
        .await;
    assert_eq!(widget.status, 201, "{}", widget.body);
    let widget_id = widget.body["id"].as_str().unwrap();
    // Nothing listens on port 1: the streamed route fails before its first
    // event and the widget asks the buffered one.
    host_pages(
        site_a,
        vec![
            ("/", page(&api.base, widget_id, None)),
            (
                "/fallback",
                page(&api.base, widget_id, Some("http://127.0.0.1:1")),
            ),
        ],
    );
    host_pages(site_b, vec![("/", page(&api.base, widget_id, None))]);

    let screenshot = support::repo_root().join(".local/artifacts/widget.png");
    let _ = std::fs::remove_file(&screenshot);
    let Some(run) = drive(vec![
        "--allowed".into(),
        format!("{origin}/"),
        "--refused".into(),
        format!("{other}/"),
        "--question".into(),
        "What is the capital of France?".into(),
        "--follow-up".into(),
        "Which river does it lie on?".into(),
        "--fallback".into(),
        format!("{origin}/fallback"),
        "--screenshot".into(),
        screenshot.display().to_string(),
    ])
    .await
    else {
        return;
    };
    eprintln!("widget_browser: {run}");

    // The allowed page: the launcher is ready, themed and titled by the widget.
    let a = &run["allowed"];
    assert_eq!(a["state"], "ready", "{run}");
    let opened = &a["opened"];
    assert_eq!(opened["title"], "Atlas help", "{run}");
    assert_eq!(opened["panel_open"], true, "{run}");
    assert_eq!(opened["launcher_label"], "Close chat", "{run}");
    // Opening the panel puts the caret in the question box.
    assert_eq!(opened["focused"], "textarea", "{run}");
    assert_eq!(
        opened["bubbles"][0]["text"], "Hello! Ask me about France.",
        "{run}"
    );
    // The question, sent with Enter, came back answered from the document,
    // its marker linked to the cited passage.
    let after = &a["after"];
    assert_eq!(after["errors"], json!([]), "{run}");
    assert_eq!(after["route"], "stream", "{run}");
    let answer = after["answer"].as_str().unwrap();
    assert!(answer.contains("Paris is the capital of France"), "{run}");
    assert_eq!(after["citations"][0]["n"], 1, "{run}");
    assert_eq!(after["citations"][0]["title"], "France", "{run}");
    assert!(
        after["citations"][0]["snippet"]
            .as_str()
            .unwrap()
            .contains("Seine"),
        "{run}"
    );
    assert_eq!(after["markers"][0], "Source 1: France", "{run}");
    // The follow-up goes on in the same conversation.
    let session = after["session_id"].as_str().expect("a session id");
    let follow_up = &a["follow_up"];
    assert_eq!(follow_up["errors"], json!([]), "{run}");
    assert_eq!(follow_up["answers"], 2, "{run}");
    assert!(
        follow_up["answer"].as_str().unwrap().contains("Seine"),
        "{run}"
    );
    assert_eq!(follow_up["session_id"], session, "{run}");
    assert_eq!(follow_up["visitor_id"], after["visitor_id"], "{run}");
    assert_eq!(opened["visitor_id"], after["visitor_id"], "{run}");
    // The token at load, then a renewal before each question.
    assert_eq!(follow_up["token_requests"], 3, "{run}");
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
    let tti = a["tti_ms"].as_f64().expect("time to interactive");
    eprintln!(
        "widget_browser: time to interactive {tti} ms (script request to launcher ready), \
         answer shown in {} ms; screenshot {}",
        a["answer_ms"], run["screenshot"]
    );

    // With the streamed route unreachable the buffered one answers, cited.
    let fallback = &run["fallback"]["after"];
    assert_eq!(fallback["errors"], json!([]), "{run}");
    assert_eq!(fallback["route"], "buffered", "{run}");
    assert!(
        fallback["answer"]
            .as_str()
            .unwrap()
            .contains("Paris is the capital of France"),
        "{run}"
    );
    assert_eq!(fallback["citations"][0]["title"], "France", "{run}");

    // Whatever went wrong was said in the panel, never thrown at the page.
    let console = run["console"].as_array().cloned().unwrap_or_default();
    assert!(
        !console
            .iter()
            .any(|line| line.as_str().unwrap().contains("Uncaught")),
        "{run}"
    );

    // The other origin: the token is refused and the widget says so.
    let b = &run["refused"];
    assert_eq!(b["state"], "refused", "{run}");
    assert_eq!(
        b["page"]["errors"],
        json!(["This chat isn't available on this site."]),
        "{run}"
    );
}
