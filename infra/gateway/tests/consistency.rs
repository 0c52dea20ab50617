//! template.yaml is the single source of truth: every route there has a
//! binary and a handler, every handler and binary has its route, and every
//! HTTP function has its events/ fixture with the matching route key.

use std::collections::BTreeSet;

use common::lambda::Handler;
use ragway_gateway::template::{self, TemplateEvent};
use ragway_gateway::{Gateway, registry};

mod support;
use support::repo_root;

fn bin_files() -> BTreeSet<(String, String)> {
    let mut bins = BTreeSet::new();
    for package in std::fs::read_dir(repo_root().join("functions")).unwrap() {
        let package = package.unwrap().path();
        let Ok(entries) = std::fs::read_dir(package.join("src/bin")) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let package_name = package.file_name().unwrap().to_string_lossy().into_owned();
            bins.insert((package_name, name));
        }
    }
    bins
}

#[test]
fn template_binaries_and_handlers_agree() {
    let functions = template::load(&repo_root().join("template.yaml")).unwrap();
    let registry = registry();
    let template_binaries: BTreeSet<String> = functions.iter().map(|f| f.binary.clone()).collect();
    let handler_names: BTreeSet<String> = registry.iter().map(|f| f.name.to_owned()).collect();
    let bins = bin_files();
    let bin_names: BTreeSet<String> = bins.iter().map(|(_, b)| b.clone()).collect();

    assert_eq!(
        template_binaries, handler_names,
        "template.yaml functions vs registered handlers"
    );
    assert_eq!(
        bin_names, handler_names,
        "src/bin files vs registered handlers"
    );
    assert_eq!(
        functions.len(),
        template_binaries.len(),
        "a binary is named by two functions"
    );

    for function in &functions {
        // CodeUri names the package whose src/bin holds the binary.
        let package = function
            .code_uri
            .trim_start_matches("functions/")
            .trim_end_matches('/');
        assert!(
            bins.contains(&(package.to_owned(), function.binary.clone())),
            "{}: CodeUri {} has no bin {}",
            function.logical_id,
            function.code_uri,
            function.binary
        );
        assert!(
            function.binary.starts_with(&format!("{package}-")),
            "{} is not named <resource>-<action>",
            function.binary
        );
        let handler = registry.iter().find(|f| f.name == function.binary).unwrap();
        for event in &function.events {
            match event {
                TemplateEvent::Http { .. } => assert!(
                    matches!(handler.handler, Handler::Http(_)),
                    "{}",
                    function.binary
                ),
                TemplateEvent::Sqs { .. } => assert!(
                    matches!(handler.handler, Handler::Sqs(_)),
                    "{}",
                    function.binary
                ),
                TemplateEvent::Schedule { .. } => {}
                TemplateEvent::StreamingUrl => assert!(
                    matches!(handler.handler, Handler::Stream(_)),
                    "{}",
                    function.binary
                ),
            }
        }
    }
}

#[test]
fn gateway_serves_every_template_route_and_fixtures_match_them() {
    let functions = template::load(&repo_root().join("template.yaml")).unwrap();
    let gateway = Gateway::from_template(&functions, &registry()).unwrap();
    let http_events: Vec<(String, String)> = functions
        .iter()
        .flat_map(|f| {
            f.events.iter().filter_map(|e| match e {
                TemplateEvent::Http { method, path } => {
                    Some((f.binary.clone(), format!("{method} {path}")))
                }
                _ => None,
            })
        })
        .collect();
    // A streaming function's URL routes nothing: its handler names its
    // route, and its fixture is a function URL event on that path.
    let streamed: Vec<(String, &'static str, &'static str)> = functions
        .iter()
        .filter(|f| f.events.contains(&TemplateEvent::StreamingUrl))
        .map(|f| {
            let function = registry().into_iter().find(|r| r.name == f.binary).unwrap();
            let Handler::Stream(route) = function.handler else {
                panic!("{} has a streaming URL but no streaming handler", f.binary)
            };
            (f.binary.clone(), route.method, route.path)
        })
        .collect();
    assert!(!streamed.is_empty());
    for (binary, method, path) in &streamed {
        let text = std::fs::read_to_string(repo_root().join(format!("events/{binary}.json")))
            .unwrap_or_else(|_| panic!("missing the fixture of {binary}"));
        let event: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(event["routeKey"], "$default", "{binary}");
        assert_eq!(
            event["requestContext"]["http"]["method"], *method,
            "{binary}"
        );
        let raw = event["rawPath"].as_str().unwrap();
        let pattern: Vec<&str> = path.split('/').collect();
        let parts: Vec<&str> = raw.split('/').collect();
        assert_eq!(parts.len(), pattern.len(), "{binary}: {raw} against {path}");
        for (part, expected) in parts.iter().zip(&pattern) {
            assert!(
                expected.starts_with('{') || part == expected,
                "{binary}: {raw} against {path}"
            );
        }
    }
    assert_eq!(gateway.routes.len(), http_events.len() + streamed.len());
    assert!(
        http_events.len() >= 15,
        "the foundation routes are all declared"
    );
    let table = gateway.describe();
    for (binary, route_key) in &http_events {
        assert!(
            table.contains(binary.as_str()),
            "route table lacks {binary}"
        );
        let fixture = repo_root().join(format!("events/{binary}.json"));
        let text = std::fs::read_to_string(&fixture)
            .unwrap_or_else(|_| panic!("missing {}", fixture.display()));
        let event: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            event["routeKey"],
            route_key.as_str(),
            "{}",
            fixture.display()
        );
        assert_eq!(event["version"], "2.0");
    }
}

#[test]
fn every_function_has_its_event_fixture() {
    // What `sam local invoke -e events/<binary>.json` takes, for every
    // kind of function (HTTP fixtures are checked against their routes above).
    for function in registry() {
        let fixture = repo_root().join(format!("events/{}.json", function.name));
        let text = std::fs::read_to_string(&fixture)
            .unwrap_or_else(|_| panic!("missing {}", fixture.display()));
        let _: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", fixture.display()));
    }
}

#[test]
fn template_parses_cloudformation_short_forms() {
    let yaml = r#"
Globals:
  Function:
    Timeout: 15
Resources:
  Queue:
    Type: AWS::SQS::Queue
  Worker:
    Type: AWS::Serverless::Function
    Metadata: { BuildMethod: rust-cargolambda, BuildProperties: { Binary: ingest-worker } }
    Properties:
      CodeUri: functions/ingest
      Timeout: 120
      Events:
        Q:
          Type: SQS
          Properties: { Queue: !GetAtt Queue.Arn, BatchSize: 7 }
  Requeue:
    Type: AWS::Serverless::Function
    Metadata: { BuildProperties: { Binary: ingest-requeue } }
    Properties:
      CodeUri: functions/ingest
"#;
    let functions = template::parse(yaml).unwrap();
    assert_eq!(
        functions[0].events,
        vec![TemplateEvent::Sqs {
            queue: "Queue".into(),
            batch_size: 7
        }]
    );
    // A function's own Timeout, else the global one (the local gateway
    // gives its queue consumers that deadline, as Lambda does).
    assert_eq!(functions[0].timeout, Some(120));
    assert_eq!(functions[1].timeout, Some(15));
}

static TICKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn count_tick(_state: &common::state::State, event: serde_json::Value) -> common::Result<()> {
    assert_eq!(event["detail-type"], "Scheduled Event");
    TICKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}

#[tokio::test]
async fn scheduled_functions_run_on_their_timer() {
    let yaml = r#"
Resources:
  Sweeper:
    Type: AWS::Serverless::Function
    Metadata: { BuildProperties: { Binary: budget-sweeper } }
    Properties:
      CodeUri: functions/budget
      Events:
        Every:
          Type: Schedule
          Properties: { Schedule: rate(1 minute) }
"#;
    let functions = template::parse(yaml).unwrap();
    let registry = [common::schedule_function!("budget-sweeper", count_tick)];
    let gateway = Gateway::from_template(&functions, &registry).unwrap();
    assert_eq!(gateway.schedules.len(), 1);
    assert_eq!(
        gateway.schedules[0].every,
        std::time::Duration::from_secs(60)
    );
    assert!(gateway.describe().contains("budget-sweeper"));

    // Run it at a test-sized period; the state's pool is lazy, so no database is needed.
    let mut schedule = gateway.schedules[0].clone();
    schedule.every = std::time::Duration::from_millis(40);
    let state = std::sync::Arc::new(common::state::State::new(support::config(&[])).unwrap());
    let task = tokio::spawn(ragway_gateway::schedule::run(state, schedule));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    task.abort();
    assert!(TICKS.load(std::sync::atomic::Ordering::SeqCst) >= 3);
}
