//! `template.yaml` and `infra/in-use-reader.yaml` checks: `cfn-lint` is clean (and does
//! catch a broken template), `sam validate --lint` passes without AWS credentials, every
//! environment variable the code reads is set on the right functions from a stack
//! parameter whose default is the code's default, and the rules, buckets, alarms,
//! dashboard and pull time exclusions are as the README says. The helpers here serve the
//! sibling modules: `template_checkov` (checkov), `template_in_use` (the role other
//! accounts deploy) and `template_queues` (work queues, reconciler, janitor fan-out).

use afterpush::settings::{self, Function, SETTINGS};
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `cfn-lint` from the venv of `$AFTERPUSH_PYTHON` (scripts/test creates it).
fn cfn_lint() -> PathBuf {
    let python = std::env::var_os("AFTERPUSH_PYTHON").unwrap_or_else(|| {
        panic!(
            "AFTERPUSH_PYTHON is not set: run scripts/test, or `python3 -m venv .venv && \
             .venv/bin/pip install cfn-lint` and export AFTERPUSH_PYTHON=$PWD/.venv/bin/python"
        )
    });
    let bin = Path::new(&python).parent().unwrap().join("cfn-lint");
    assert!(
        bin.exists(),
        "{} is missing: `{} -m pip install cfn-lint`",
        bin.display(),
        Path::new(&python).display()
    );
    bin
}

fn run_cfn_lint(template: &Path) -> (bool, String) {
    let out = Command::new(cfn_lint())
        .arg(template)
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("run cfn-lint");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every CloudFormation template the repository ships.
pub(crate) const TEMPLATES: [&str; 2] = ["template.yaml", "infra/in-use-reader.yaml"];

#[test]
fn cfn_lint_is_clean() {
    for template in TEMPLATES {
        let (ok, output) = run_cfn_lint(&root().join(template));
        assert!(ok, "cfn-lint {template}:\n{output}");
    }
}

#[test]
fn cfn_lint_rejects_a_broken_template() {
    // Proves the check above can fail: an unknown runtime and a dangling !GetAtt.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "Transform: AWS::Serverless-2016-10-31\nResources:\n  F:\n    Type: AWS::Serverless::Function\n    \
         Properties:\n      Runtime: provided.al2099\n      Handler: bootstrap\n      CodeUri: .\n      \
         Architectures: [arm64]\nOutputs:\n  O:\n    Value: !GetAtt Missing.Arn\n",
    )
    .unwrap();
    let (ok, output) = run_cfn_lint(&broken);
    assert!(!ok, "cfn-lint accepted a broken template:\n{output}");
    assert!(
        output.contains("Missing") || output.contains("provided.al2099"),
        "{output}"
    );
}

/// The SAM CLI: `$AFTERPUSH_SAM`, else `sam` beside `$AFTERPUSH_PYTHON`, else the
/// separate venv /opt/afterpush-sam-venv (aws-sam-cli pins an older boto3 than moto's
/// venv has, so it lives in its own venv).
fn sam() -> PathBuf {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("AFTERPUSH_SAM") {
        candidates.push(p.into());
    }
    if let Some(p) = std::env::var_os("AFTERPUSH_PYTHON") {
        candidates.push(Path::new(&p).parent().unwrap().join("sam"));
    }
    candidates.push("/opt/afterpush-sam-venv/bin/sam".into());
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "the SAM CLI is missing (looked at {candidates:?}): `python3 -m venv \
             /opt/afterpush-sam-venv && /opt/afterpush-sam-venv/bin/pip install aws-sam-cli` \
             or set AFTERPUSH_SAM"
            )
        })
}

#[test]
fn sam_validate_lint_passes_without_credentials() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(sam());
    cmd.args(["validate", "--lint", "--template-file"])
        .arg(root().join("template.yaml"))
        .current_dir(root())
        // No credentials, no config, no telemetry: the lint is offline.
        .env("HOME", home.path())
        .env("SAM_CLI_TELEMETRY", "0")
        .env("AWS_REGION", "us-east-1");
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.output().expect("run sam validate --lint");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "sam validate --lint:\n{text}");
    assert!(text.contains("is a valid SAM Template"), "{text}");
}

// ------------------------------------------------------------------ settings coverage

pub(crate) fn template() -> Value {
    let text = std::fs::read_to_string(root().join("template.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).expect("template.yaml is YAML")
}

/// The parameter a `!Ref Name` (possibly inside `!If`) names; `None` for literals.
fn referenced_parameters(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Tagged(t) => {
            if t.tag == "Ref" {
                if let Value::String(name) = &t.value {
                    out.insert(name.clone());
                }
            } else {
                referenced_parameters(&t.value, out);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|v| referenced_parameters(v, out)),
        Value::Mapping(m) => m.values().for_each(|v| referenced_parameters(v, out)),
        _ => {}
    }
}

fn env_of(node: &Value) -> BTreeMap<String, Value> {
    node.get("Environment")
        .and_then(|e| e.get("Variables"))
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// Every function's environment, keyed by its binary name (from BuildProperties.Binary).
pub(crate) fn function_envs(t: &Value) -> BTreeMap<String, BTreeMap<String, Value>> {
    let global = env_of(&t["Globals"]["Function"]);
    let mut out = BTreeMap::new();
    for (_, resource) in t["Resources"].as_mapping().unwrap() {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let binary = resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .expect("every function names its Binary")
            .to_string();
        assert_eq!(
            resource["Metadata"]["BuildMethod"].as_str(),
            Some("rust-cargolambda")
        );
        let mut env = global.clone();
        env.extend(env_of(&resource["Properties"]));
        out.insert(binary, env);
    }
    out
}

/// Variables the template sets for the reconcile fan-out (issue 22) that the code reading
/// them, merged from other branches, has not declared in `settings::SETTINGS` yet:
/// (binary, variable). Each is checked like the others but for the code's default; once
/// SETTINGS declares it, the test below says to remove it from here.
const NOT_YET_DECLARED: &[(&str, &str)] = &[];

/// Functions the template deploys whose `settings::Function` variant comes with their
/// code (issue 22's reconciler). Until then each variable they are given must be one
/// SETTINGS declares (for any function) or one NOT_YET_DECLARED names for them.
const NOT_YET_A_FUNCTION: &[&str] = &[];

/// Settings the stack fills from its own resources, not from a parameter: the URL of
/// the queue it creates.
const FROM_RESOURCES: &[(&str, &str)] = &[
    ("INDEXER_QUEUE_URL", "IndexerWorkQueue"),
    ("STITCHER_QUEUE_URL", "StitcherWorkQueue"),
    ("JANITOR_QUEUE_URL", "JanitorWorkQueue"),
];

/// `binary`'s variable `name` is set to `value` from a parameter whose default is the
/// code's `default` (when it is a plain `!Ref` and the code has one), or is the URL of
/// the queue FROM_RESOURCES names.
fn check_setting_value(t: &Value, binary: &str, name: &str, default: &str, value: &Value) {
    if let Some((_, queue)) = FROM_RESOURCES.iter().find(|(n, _)| *n == name) {
        assert_eq!(
            scalar_text(tagged(value, "Ref")),
            *queue,
            "{binary}: {name} is not the URL of {queue}"
        );
        assert_eq!(
            t["Resources"][*queue]["Type"].as_str(),
            Some("AWS::SQS::Queue")
        );
        return;
    }
    let parameters = t["Parameters"].as_mapping().unwrap();
    let mut refs = BTreeSet::new();
    referenced_parameters(value, &mut refs);
    let params: Vec<&String> = refs
        .iter()
        .filter(|r| parameters.contains_key(r.as_str()))
        .collect();
    assert!(
        !params.is_empty(),
        "{binary}: {name} is not set from a parameter ({value:?})"
    );
    // A plain `!Ref Parameter` must default to what the code assumes when unset.
    if let (Value::Tagged(tag), false) = (value, default.is_empty()) {
        if tag.tag == "Ref" {
            let parameter_default = scalar_text(&parameters[params[0].as_str()]["Default"]);
            assert_eq!(
                parameter_default, default,
                "{name}: parameter {} default differs from the code's",
                params[0]
            );
        }
    }
}

#[test]
fn every_setting_is_a_parameter_with_the_code_default() {
    let t = template();
    let envs = function_envs(&t);
    let declared = |name: &str| SETTINGS.iter().any(|s| s.name == name);
    for (binary, name) in NOT_YET_DECLARED {
        assert!(
            !declared(name),
            "settings::SETTINGS declares {name} now: remove it from NOT_YET_DECLARED"
        );
        assert!(
            envs.get(*binary).is_some_and(|env| env.contains_key(*name)),
            "template.yaml does not set {name} on {binary}"
        );
    }
    let pending = |binary: &str, name: &str| NOT_YET_DECLARED.contains(&(binary, name));
    let mut binaries: BTreeSet<&str> = Function::ALL.iter().map(|f| f.binary()).collect();
    for binary in NOT_YET_A_FUNCTION {
        assert!(
            binaries.insert(binary),
            "settings::Function has {binary} now: remove it from NOT_YET_A_FUNCTION"
        );
    }
    assert_eq!(
        envs.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        binaries,
        "template functions vs settings::Function"
    );
    for function in Function::ALL {
        let binary = function.binary();
        let env = &envs[binary];
        for setting in SETTINGS.iter().filter(|s| s.functions.contains(&function)) {
            let value = env.get(setting.name).unwrap_or_else(|| {
                panic!(
                    "{function} reads {} but template.yaml does not set it",
                    setting.name
                )
            });
            check_setting_value(&t, binary, setting.name, setting.default, value);
        }
        // And nothing stale: every variable set is one the function reads.
        for (name, value) in env {
            let known = SETTINGS
                .iter()
                .any(|s| s.name == name && s.functions.contains(&function));
            assert!(
                known || pending(binary, name),
                "template.yaml sets {name} on {function}, which does not read it"
            );
            if !known {
                check_setting_value(&t, binary, name, "", value);
            }
        }
    }
    for binary in NOT_YET_A_FUNCTION {
        for (name, value) in &envs[*binary] {
            let default = match settings::setting(name) {
                Some(setting) => setting.default,
                None => {
                    assert!(
                        pending(binary, name),
                        "template.yaml sets {name} on {binary}, and no code declares it"
                    );
                    ""
                }
            };
            check_setting_value(&t, binary, name, default, value);
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Environment names read anywhere in the library, CLI and functions (`env::var("X")`,
/// `var_os`, our `settings::value*(.., "X")`, `get("X")`/`set("X")` lookups, clap's
/// `env = "X"`) must be declared in
/// `settings::SETTINGS` — and so (test above) be stack parameters. Exempt: variables
/// Lambda or the OS set (`AWS_*`, `RUST_LOG`, `HOME`, ...) and CLI-only `AFTERPUSH_*`.
#[test]
fn code_reads_only_declared_settings() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    rust_files(&root().join("functions"), &mut files);
    let pattern = regex::Regex::new(
        r#"(?:\bvar(?:_os)?|\bvalue(?:_or_default)?|\bget|\bset)\(\s*(?:&\w+\s*,\s*)?"([A-Z][A-Z0-9_]+)"|\benv\s*=\s*"([A-Z][A-Z0-9_]+)""#,
    )
    .unwrap();
    let exempt = |name: &str| {
        name.starts_with("AWS_")
            || name.starts_with("AFTERPUSH_")
            || name.starts_with("CARGO_")
            || ["RUST_LOG", "HOME", "PATH", "TMPDIR", "NO_COLOR", "TERM"].contains(&name)
    };
    let mut undeclared = Vec::new();
    let mut found = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for cap in pattern.captures_iter(&text) {
            let name = cap.get(1).or(cap.get(2)).unwrap().as_str();
            found += 1;
            if !exempt(name) && !SETTINGS.iter().any(|s| s.name == name) {
                undeclared.push(format!("{name} in {}", file.display()));
            }
        }
    }
    // The scan must see at least the logging variables, or the pattern is broken.
    assert!(found >= 3, "the scan found only {found} environment reads");
    assert!(
        undeclared.is_empty(),
        "environment variables read but not declared in settings::SETTINGS (so not in \
         template.yaml): {undeclared:#?}"
    );
}

#[test]
fn rules_and_schedule_route_the_right_events() {
    let t = template();
    let events = |function: &str| t["Resources"][function]["Properties"]["Events"].clone();
    let indexer = events("SociIndexerFunction");
    let stitcher = events("ManifestStitcherFunction");
    let janitor = events("CacheJanitorFunction");
    for rule in [
        &indexer["EcrPush"],
        &stitcher["EcrArchTagPush"],
        &janitor["EcrPush"],
    ] {
        assert_eq!(rule["Type"].as_str(), Some("EventBridgeRule"));
        let p = &rule["Properties"]["Pattern"];
        assert_eq!(p["source"][0].as_str(), Some("aws.ecr"));
        assert_eq!(p["detail-type"][0].as_str(), Some("ECR Image Action"));
        assert_eq!(p["detail"]["action-type"][0].as_str(), Some("PUSH"));
        assert_eq!(p["detail"]["result"][0].as_str(), Some("SUCCESS"));
        assert!(matches!(
            &rule["Properties"]["DeadLetterConfig"]["Arn"],
            Value::Tagged(_)
        ));
        assert!(rule["Properties"]["RetryPolicy"]["MaximumRetryAttempts"].is_number());
    }
    assert!(
        stitcher["EcrArchTagPush"]["Properties"]["Pattern"]["detail"]["image-tag"][0]
            .get("suffix")
            .is_some()
    );
    // The janitor hears every push but the indexer's output: the policy decides.
    for rule in [&janitor["EcrPush"], &indexer["EcrPush"]] {
        assert!(
            rule["Properties"]["Pattern"]["detail"]["image-tag"][0]["anything-but"]
                .get("suffix")
                .is_some()
        );
    }
    // And may list what ECS and Lambda use (in-use protection), read-only.
    let policies =
        serde_yaml_ng::to_string(&t["Resources"]["CacheJanitorFunction"]["Properties"]["Policies"])
            .unwrap();
    for action in [
        "ecs:ListClusters",
        "ecs:ListServices",
        "ecs:DescribeServices",
        "ecs:ListTasks",
        "ecs:DescribeTasks",
        "ecs:ListTaskDefinitions",
        "ecs:DescribeTaskDefinition",
        "lambda:ListFunctions",
        "lambda:ListVersionsByFunction",
        "lambda:ListAliases",
        "lambda:GetFunction",
    ] {
        assert!(policies.contains(action), "janitor lacks {action}");
    }
    assert_eq!(janitor["Sweep"]["Type"].as_str(), Some("Schedule"));
    // DRY_RUN defaults to true in the stack, whatever the code's default.
    assert_eq!(scalar_text(&t["Parameters"]["DryRun"]["Default"]), "true");
}

/// Cached zTOCs are published into other images' indexes, and a consistently forged one
/// cannot be detected without reading its layer again: the bucket the stack creates takes
/// writes and deletes from the indexer's role only.
#[test]
fn the_created_ztoc_cache_bucket_takes_writes_only_from_the_indexer() {
    let t = template();
    let resources = &t["Resources"];
    let policy = &resources["ZtocCacheBucketPolicy"];
    assert_eq!(policy["Type"].as_str(), Some("AWS::S3::BucketPolicy"));
    assert_eq!(
        policy["Condition"].as_str(),
        resources["ZtocCacheBucketResource"]["Condition"].as_str(),
        "the policy exists exactly when the bucket does"
    );
    let tag_value = |v: &Value, tag: &str| match v {
        Value::Tagged(t) if t.tag == tag => scalar_text(&t.value),
        other => panic!("expected !{tag}, got {other:?}"),
    };
    assert_eq!(
        tag_value(&policy["Properties"]["Bucket"], "Ref"),
        "ZtocCacheBucketResource"
    );
    let statements = policy["Properties"]["PolicyDocument"]["Statement"]
        .as_sequence()
        .unwrap();
    let deny = statements
        .iter()
        .find(|s| s["Effect"].as_str() == Some("Deny"))
        .expect("a Deny statement");
    assert_eq!(deny["Principal"].as_str(), Some("*"));
    let actions: BTreeSet<&str> = deny["Action"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for action in ["s3:PutObject", "s3:DeleteObject"] {
        assert!(actions.contains(action), "{action} not denied: {actions:?}");
    }
    assert!(tag_value(&deny["Resource"], "Sub").starts_with("${ZtocCacheBucketResource.Arn}/"));
    // Everyone but the role SAM creates for the indexer (it names none of its own).
    assert_eq!(
        tag_value(
            &deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"],
            "GetAtt"
        ),
        "SociIndexerFunctionRole.Arn"
    );
    assert!(resources["SociIndexerFunction"]["Properties"]
        .get("Role")
        .is_none());
}

// ------------------------------------------------------------------ operations

pub(crate) fn tagged<'a>(v: &'a Value, tag: &str) -> &'a Value {
    match v {
        Value::Tagged(t) if t.tag == tag => &t.value,
        other => panic!("expected !{tag}, got {other:?}"),
    }
}

pub(crate) const FUNCTIONS: [&str; 4] = [
    "SociIndexerFunction",
    "ManifestStitcherFunction",
    "CacheJanitorFunction",
    "ReconcilerFunction",
];

/// A burst of pushes cannot take the account's concurrency: the indexer's reserved
/// concurrency is a parameter (default 10), and the events beyond it wait in Lambda's
/// async queue, bounded by EventInvokeConfig, then go to the indexer's failure queue.
#[test]
fn the_indexer_has_a_reserved_concurrency_parameter() {
    let t = template();
    let parameter = &t["Parameters"]["IndexerReservedConcurrency"];
    assert_eq!(parameter["Type"].as_str(), Some("Number"));
    assert_eq!(scalar_text(&parameter["Default"]), "10");
    // 0 would stop the function altogether.
    assert_eq!(scalar_text(&parameter["MinValue"]), "1");
    let indexer = &t["Resources"]["SociIndexerFunction"]["Properties"];
    assert_eq!(
        scalar_text(tagged(&indexer["ReservedConcurrentExecutions"], "Ref")),
        "IndexerReservedConcurrency"
    );
    let invoke = &indexer["EventInvokeConfig"];
    assert_eq!(scalar_text(&invoke["MaximumEventAgeInSeconds"]), "21600");
    assert_eq!(scalar_text(&invoke["MaximumRetryAttempts"]), "2");
    let on_failure = &invoke["DestinationConfig"]["OnFailure"];
    assert_eq!(on_failure["Type"].as_str(), Some("SQS"));
    assert_eq!(
        scalar_text(tagged(&on_failure["Destination"], "GetAtt")),
        "SociIndexerFailureQueue.Arn"
    );
}

/// Each function has alarms on its Errors and Throttles and on its failure queue's
/// depth, notifying `AlarmTopicArn` only when it is set.
#[test]
fn every_function_has_error_throttle_and_failure_queue_alarms() {
    let t = template();
    let parameter = &t["Parameters"]["AlarmTopicArn"];
    assert_eq!(parameter["Type"].as_str(), Some("String"));
    assert_eq!(scalar_text(&parameter["Default"]), "");
    let pattern = regex::Regex::new(&scalar_text(&parameter["AllowedPattern"])).unwrap();
    for ok in ["", "arn:aws:sns:eu-west-1:123456789012:ops-alerts"] {
        assert!(pattern.is_match(ok), "{ok}");
    }
    for bad in ["ops-alerts", "arn:aws:sqs:eu-west-1:123456789012:q"] {
        assert!(!pattern.is_match(bad), "{bad}");
    }
    // HasAlarmTopic: AlarmTopicArn is not empty.
    let condition = tagged(&t["Conditions"]["HasAlarmTopic"], "Not");
    let equals = tagged(&condition[0], "Equals");
    assert_eq!(scalar_text(tagged(&equals[0], "Ref")), "AlarmTopicArn");
    assert_eq!(scalar_text(&equals[1]), "");

    let resources = t["Resources"].as_mapping().unwrap();
    let alarms: Vec<&Value> = resources
        .values()
        .filter(|r| r["Type"].as_str() == Some("AWS::CloudWatch::Alarm"))
        .collect();
    let alarm_on = |namespace: &str, metric: &str, dimension: &Value| -> &Value {
        let found: Vec<&&Value> = alarms
            .iter()
            .filter(|a| {
                let p = &a["Properties"];
                p["Namespace"].as_str() == Some(namespace)
                    && p["MetricName"].as_str() == Some(metric)
                    && &p["Dimensions"][0]["Value"] == dimension
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "alarms on {namespace} {metric} {dimension:?}"
        );
        &found[0]["Properties"]
    };
    let intrinsic = |tag: &str, value: String| {
        Value::Tagged(Box::new(serde_yaml_ng::value::TaggedValue {
            tag: serde_yaml_ng::value::Tag::new(tag),
            value: Value::String(value),
        }))
    };
    let check_alarm = |alarm: &Value, what: &str| {
        assert_eq!(scalar_text(&alarm["Threshold"]), "1", "{what}");
        assert_eq!(
            alarm["ComparisonOperator"].as_str(),
            Some("GreaterThanOrEqualToThreshold")
        );
        assert_eq!(alarm["TreatMissingData"].as_str(), Some("notBreaching"));
        for actions in ["AlarmActions", "OKActions"] {
            let branches = tagged(&alarm[actions], "If");
            assert_eq!(branches[0].as_str(), Some("HasAlarmTopic"), "{actions}");
            assert_eq!(scalar_text(tagged(&branches[1][0], "Ref")), "AlarmTopicArn");
            assert_eq!(scalar_text(tagged(&branches[2], "Ref")), "AWS::NoValue");
        }
    };
    for function in FUNCTIONS {
        let function_ref = intrinsic("Ref", function.to_string());
        let queue = function.replace("Function", "FailureQueue");
        let queue_name = intrinsic("GetAtt", format!("{queue}.QueueName"));
        // The failure queue the alarm watches is the one the function's failures go to.
        let destination = &t["Resources"][function]["Properties"]["EventInvokeConfig"]
            ["DestinationConfig"]["OnFailure"]["Destination"];
        assert_eq!(
            scalar_text(tagged(destination, "GetAtt")),
            format!("{queue}.Arn")
        );
        for (namespace, metric, dimension) in [
            ("AWS/Lambda", "Errors", &function_ref),
            ("AWS/Lambda", "Throttles", &function_ref),
            ("AWS/SQS", "ApproximateNumberOfMessagesVisible", &queue_name),
        ] {
            let alarm = alarm_on(namespace, metric, dimension);
            check_alarm(alarm, &format!("{metric} of {function}"));
        }
    }
    // Work that failed on every receive waits in the dead-letter queue for a redrive.
    let dead_letters = intrinsic("GetAtt", "WorkDeadLetterQueue.QueueName".to_string());
    let alarm = alarm_on(
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        &dead_letters,
    );
    check_alarm(alarm, "the work dead-letter queue");
    assert_eq!(
        alarms.len(),
        3 * FUNCTIONS.len() + 1,
        "three alarms per function, one on the work dead-letter queue"
    );
}

/// The dashboard is valid JSON once CloudFormation substitutes it, shows every metric
/// the functions emit (`afterpush::metrics::METRICS`), each function's errors,
/// throttles and duration, and the depth of every queue.
#[test]
fn the_dashboard_shows_every_metric_and_each_functions_health() {
    let t = template();
    let dashboard = &t["Resources"]["Dashboard"];
    assert_eq!(
        dashboard["Type"].as_str(),
        Some("AWS::CloudWatch::Dashboard")
    );
    let raw_body = scalar_text(tagged(&dashboard["Properties"]["DashboardBody"], "Sub"));
    // What !Sub substitutes: resource names and pseudo parameters, all of them defined.
    let substitution = regex::Regex::new(r"\$\{([A-Za-z0-9:.]+)\}").unwrap();
    for cap in substitution.captures_iter(&raw_body) {
        let name = cap[1].split('.').next().unwrap();
        assert!(
            name.starts_with("AWS::") || t["Resources"].get(name).is_some(),
            "the dashboard substitutes an unknown {name}"
        );
    }
    let substituted = substitution.replace_all(&raw_body, "x");
    let body: serde_json::Value = serde_json::from_str(&substituted)
        .unwrap_or_else(|e| panic!("the dashboard body is not JSON: {e}\n{substituted}"));
    let widgets = body["widgets"].as_array().unwrap();
    let text = body.to_string();
    for (name, _) in afterpush::metrics::METRICS {
        assert!(
            text.contains(&format!("MetricName=\\\"{name}\\\""))
                || text.contains(&format!("\"{name}\"")),
            "the dashboard does not show {name}"
        );
    }
    assert!(text.contains(&format!("{{{},", afterpush::metrics::NAMESPACE)));
    let series: Vec<&serde_json::Value> = widgets
        .iter()
        .flat_map(|w| w["properties"]["metrics"].as_array().unwrap())
        .collect();
    for metric in ["Errors", "Throttles", "Duration"] {
        let functions = series
            .iter()
            .filter(|s| s[0] == "AWS/Lambda" && s[1] == metric && s[2] == "FunctionName")
            .count();
        assert_eq!(functions, FUNCTIONS.len(), "{metric} of each function");
    }
    let queues = series
        .iter()
        .filter(|s| s[0] == "AWS/SQS" && s[1] == "ApproximateNumberOfMessagesVisible")
        .count();
    // Every queue of the stack: failure queues, work queues, the dead-letter queue.
    let stack_queues: Vec<&str> = t["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::SQS::Queue"))
        .map(|(name, _)| name.as_str().unwrap())
        .collect();
    assert_eq!(queues, stack_queues.len(), "each queue's depth");
    for queue in stack_queues {
        assert!(
            raw_body.contains(&format!("\"QueueName\", \"${{{queue}.QueueName}}\"")),
            "the dashboard does not show {queue}"
        );
    }
    // Every widget has the region it reads from (the dashboard requires it).
    assert!(widgets.iter().all(|w| w["properties"]["region"] == "x"));
}

// ------------------------------------------------------------------ ECR pull times

/// ECR records a pull on every BatchGetImage: each function's role is registered as a
/// pull time update exclusion unless `ExcludeOwnPulls` is false, so "not pulled for N
/// days" rules do not count afterpush's own reads.
#[test]
fn each_functions_role_is_excluded_from_pull_times_unless_turned_off() {
    let t = template();
    let parameter = &t["Parameters"]["ExcludeOwnPulls"];
    assert_eq!(scalar_text(&parameter["Default"]), "true");
    let equals = tagged(&t["Conditions"]["ExcludeFunctionPulls"], "Equals");
    assert_eq!(scalar_text(tagged(&equals[0], "Ref")), "ExcludeOwnPulls");
    assert_eq!(scalar_text(&equals[1]), "true");
    let resources = t["Resources"].as_mapping().unwrap();
    let exclusions: Vec<&Value> = resources
        .values()
        .filter(|r| r["Type"].as_str() == Some("AWS::ECR::PullTimeUpdateExclusion"))
        .collect();
    assert_eq!(exclusions.len(), FUNCTIONS.len(), "one per function");
    let principals: BTreeSet<String> = exclusions
        .iter()
        .map(|e| {
            assert_eq!(e["Condition"].as_str(), Some("ExcludeFunctionPulls"));
            scalar_text(tagged(&e["Properties"]["PrincipalArn"], "GetAtt"))
        })
        .collect();
    for function in FUNCTIONS {
        // The role SAM creates for a function without a Role of its own.
        assert!(t["Resources"][function]["Properties"].get("Role").is_none());
        assert!(
            principals.contains(&format!("{function}Role.Arn")),
            "{function}'s role is not excluded: {principals:?}"
        );
    }
}
