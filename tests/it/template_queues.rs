//! `template.yaml`'s reconcile machinery (issue 22): the FIFO work queues and their
//! shared dead-letter queue, the event source mappings that feed them to the functions,
//! the scheduled reconciler and the janitor's per-repository fan-out. The template is
//! read as YAML, as `template.rs` does; cfn-lint, `sam validate --lint` and checkov run
//! there on the same file.

use crate::template::{function_envs, scalar_text, tagged, template};
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Each work queue, the function that consumes it, and the batch size it takes.
const WORK_QUEUES: [(&str, &str, u64); 3] = [
    // One image per invocation: the indexer's memory, budget and deadline are sized for one.
    ("IndexerWorkQueue", "SociIndexerFunction", 1),
    // A stitch reads a few manifests and writes one index.
    ("StitcherWorkQueue", "ManifestStitcherFunction", 5),
    // Each repository's sweep does its own in-use listing before it may delete.
    ("JanitorWorkQueue", "CacheJanitorFunction", 1),
];

const DEAD_LETTERS: &str = "WorkDeadLetterQueue";

fn resource<'a>(t: &'a Value, name: &str) -> &'a Value {
    let r = &t["Resources"][name];
    assert!(!r.is_null(), "template.yaml has no {name}");
    r
}

fn number(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not a whole number: {v:?}"))
}

/// `!Sub [template, {variables}]`, split.
fn sub_with_variables(v: &Value) -> (String, &Value) {
    let parts = tagged(v, "Sub").as_sequence().expect("!Sub [text, {vars}]");
    assert_eq!(parts.len(), 2, "{parts:?}");
    (scalar_text(&parts[0]), &parts[1])
}

/// The entries of a function's `Policies` that use SAM policy template `name`, by the
/// `!GetAtt <Queue>.QueueName` they name.
fn queue_policies(t: &Value, function: &str, name: &str) -> BTreeSet<String> {
    resource(t, function)["Properties"]["Policies"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|p| p.get(name))
        .map(|p| {
            let queue = scalar_text(tagged(&p["QueueName"], "GetAtt"));
            queue
                .strip_suffix(".QueueName")
                .unwrap_or_else(|| panic!("{function}: {name} names {queue}"))
                .to_string()
        })
        .collect()
}

fn functions(t: &Value) -> Vec<&str> {
    t["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Serverless::Function"))
        .map(|(name, _)| name.as_str().unwrap())
        .collect()
}

/// The work queues are high-throughput FIFO queues (deduplication and quota per message
/// group, the senders' deduplication ids rather than content), encrypted, whose failures
/// go to one FIFO dead-letter queue that takes them from these three only.
#[test]
fn the_work_queues_are_high_throughput_fifo_with_one_dead_letter_queue() {
    let t = template();
    let max_receives = &t["Parameters"]["WorkMaxReceiveCount"];
    assert_eq!(max_receives["Type"].as_str(), Some("Number"));
    // AWS's recommendation for Lambda consumers: at least 5.
    assert!(number(&max_receives["Default"]) >= 5);
    // One receive can be lost in transit: SQS advises against 1.
    assert!(number(&max_receives["MinValue"]) >= 2);
    assert!(number(&max_receives["MaxValue"]) <= 1000);

    let dead_letters = &resource(&t, DEAD_LETTERS)["Properties"];
    assert_eq!(dead_letters["FifoQueue"].as_bool(), Some(true));
    assert_eq!(dead_letters["SqsManagedSseEnabled"].as_bool(), Some(true));
    assert_eq!(number(&dead_letters["MessageRetentionPeriod"]), 1_209_600);
    let allow = &dead_letters["RedriveAllowPolicy"];
    assert_eq!(allow["redrivePermission"].as_str(), Some("byQueue"));
    let sources: Vec<(String, &Value)> = allow["sourceQueueArns"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(sub_with_variables)
        .collect();
    assert_eq!(sources.len(), WORK_QUEUES.len(), "{sources:?}");

    let mut names = BTreeSet::new();
    for (queue, _, _) in WORK_QUEUES {
        let p = &resource(&t, queue)["Properties"];
        assert_eq!(p["FifoQueue"].as_bool(), Some(true), "{queue}");
        assert_eq!(
            p["ContentBasedDeduplication"].as_bool(),
            Some(false),
            "{queue}"
        );
        assert_eq!(
            p["DeduplicationScope"].as_str(),
            Some("messageGroup"),
            "{queue}"
        );
        assert_eq!(
            p["FifoThroughputLimit"].as_str(),
            Some("perMessageGroupId"),
            "{queue}"
        );
        assert_eq!(p["SqsManagedSseEnabled"].as_bool(), Some(true), "{queue}");
        let redrive = &p["RedrivePolicy"];
        assert_eq!(
            scalar_text(tagged(&redrive["deadLetterTargetArn"], "GetAtt")),
            format!("{DEAD_LETTERS}.Arn")
        );
        assert_eq!(
            scalar_text(tagged(&redrive["maxReceiveCount"], "Ref")),
            "WorkMaxReceiveCount"
        );
        // The dead-letter queue names each source by the ARN of the queue's own name (a
        // !GetAtt would make the two queues depend on each other).
        let (name, variables) = sub_with_variables(&p["QueueName"]);
        assert!(name.ends_with(".fifo"), "{queue}: {name}");
        let arn =
            format!("arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:{name}");
        assert!(
            sources.iter().any(|(a, v)| *a == arn && *v == variables),
            "{DEAD_LETTERS} does not allow {queue} ({arn}): {sources:?}"
        );
        // The name's only variable is the stack id's UUID (36 characters), so the name
        // fits SQS's 80 characters whatever the stack is called.
        let id = tagged(&variables["Id"], "Select");
        assert_eq!(number(&id[0]), 2);
        let split = tagged(&id[1], "Split");
        assert_eq!(split[0].as_str(), Some("/"));
        assert_eq!(scalar_text(tagged(&split[1], "Ref")), "AWS::StackId");
        assert_eq!(variables.as_mapping().unwrap().len(), 1);
        let rendered = name.replace("${Id}", &"0".repeat(36));
        assert!(!rendered.contains("${"), "{name}");
        assert!(rendered.len() <= 80, "{rendered}");
        assert!(names.insert(rendered), "two queues named {name}");
    }
    let (name, _) = sub_with_variables(&dead_letters["QueueName"]);
    assert!(name.ends_with(".fifo") && name.replace("${Id}", &"0".repeat(36)).len() <= 80);
}

/// Each work queue is polled by its function only, with partial batch failures, a
/// visibility timeout of six times the function's timeout (AWS's advice for Lambda
/// consumers) and at most `WorkMaximumConcurrency` instances at once, which the
/// functions' reserved concurrency can hold; no SAM SQS event gives a role the managed
/// policy that may receive from every queue of the account.
#[test]
fn each_work_queue_is_polled_by_its_own_function_with_batch_failures() {
    let t = template();
    let concurrency = &t["Parameters"]["WorkMaximumConcurrency"];
    assert_eq!(concurrency["Type"].as_str(), Some("Number"));
    assert_eq!(number(&concurrency["Default"]), 5);
    // Lambda's limits for an SQS mapping's MaximumConcurrency.
    assert_eq!(number(&concurrency["MinValue"]), 2);
    assert_eq!(number(&concurrency["MaxValue"]), 1000);
    // CloudFormation cannot compare two parameters: the defaults keep the maximum
    // concurrency within the reserved concurrency, the descriptions say to keep it so.
    for reserved in ["IndexerReservedConcurrency", "StitcherReservedConcurrency"] {
        let parameter = &t["Parameters"][reserved];
        assert!(
            number(&concurrency["Default"]) <= number(&parameter["Default"]),
            "{reserved}"
        );
        let said = scalar_text(&concurrency["Description"]);
        assert!(said.contains(reserved), "{said}");
    }

    let mappings: Vec<&Value> = t["Resources"]
        .as_mapping()
        .unwrap()
        .values()
        .filter(|r| r["Type"].as_str() == Some("AWS::Lambda::EventSourceMapping"))
        .collect();
    assert_eq!(mappings.len(), WORK_QUEUES.len());
    let mut pollers: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for function in functions(&t) {
        for queue in queue_policies(&t, function, "SQSPollerPolicy") {
            pollers.entry(queue).or_default().push(function);
        }
        // SAM's SQS event would attach AWSLambdaSQSQueueExecutionRole (every queue).
        if let Some(events) = resource(&t, function)["Properties"]["Events"].as_mapping() {
            for (name, event) in events {
                assert_ne!(event["Type"].as_str(), Some("SQS"), "{function} {name:?}");
            }
        }
    }
    for (queue, function, batch) in WORK_QUEUES {
        let found: Vec<&&Value> = mappings
            .iter()
            .filter(|m| {
                scalar_text(tagged(&m["Properties"]["EventSourceArn"], "GetAtt"))
                    == format!("{queue}.Arn")
            })
            .collect();
        assert_eq!(found.len(), 1, "mappings of {queue}");
        let p = &found[0]["Properties"];
        assert_eq!(scalar_text(tagged(&p["FunctionName"], "Ref")), function);
        assert_eq!(number(&p["BatchSize"]), batch, "{queue}");
        let responses: Vec<&str> = p["FunctionResponseTypes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(responses, ["ReportBatchItemFailures"], "{queue}");
        assert_eq!(
            scalar_text(tagged(&p["ScalingConfig"]["MaximumConcurrency"], "Ref")),
            "WorkMaximumConcurrency"
        );
        let timeout = number(&resource(&t, function)["Properties"]["Timeout"]);
        let visibility = number(&resource(&t, queue)["Properties"]["VisibilityTimeout"]);
        assert!(
            visibility >= 6 * timeout,
            "{queue}: visibility timeout {visibility} s < 6 x {function}'s {timeout} s"
        );
        // SQS's longest visibility timeout.
        assert!(visibility <= 43_200, "{queue}");
        assert_eq!(
            pollers.remove(queue),
            Some(vec![function]),
            "pollers of {queue}"
        );
    }
    assert!(pollers.is_empty(), "other queues polled: {pollers:?}");
}

/// With per-repository fan-out (and a report bucket to gather the parts in) the
/// janitor's scheduled sweep sends one message per repository to its own queue and runs
/// those sweeps up to `WorkMaximumConcurrency` at once (its reserved concurrency follows,
/// as AWS advises); otherwise it keeps one run at a time and its queue is not polled.
#[test]
fn the_janitor_fans_out_through_its_own_queue_only_when_asked() {
    let t = template();
    let parameter = &t["Parameters"]["JanitorFanOut"];
    assert_eq!(scalar_text(&parameter["Default"]), "per-repository");
    let allowed: BTreeSet<String> = parameter["AllowedValues"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(scalar_text)
        .collect();
    assert_eq!(
        allowed,
        BTreeSet::from(["per-repository".into(), "off".into()])
    );
    // The fanned-out run gathers its parts in the report bucket: no bucket, no fan-out.
    let both = tagged(&t["Conditions"]["JanitorFansOut"], "And");
    let equals = tagged(&both[0], "Equals");
    assert_eq!(scalar_text(tagged(&equals[0], "Ref")), "JanitorFanOut");
    assert_eq!(scalar_text(&equals[1]), "per-repository");
    assert_eq!(
        scalar_text(tagged(&both[1], "Condition")),
        "HasReportBucket"
    );

    let janitor = &resource(&t, "CacheJanitorFunction")["Properties"];
    let env = &function_envs(&t)["cache-janitor"];
    let fan_out = tagged(&env["JANITOR_FAN_OUT"], "If");
    assert_eq!(fan_out[0].as_str(), Some("HasReportBucket"));
    assert_eq!(scalar_text(tagged(&fan_out[1], "Ref")), "JanitorFanOut");
    assert_eq!(scalar_text(&fan_out[2]), "off");
    assert_eq!(
        scalar_text(tagged(&env["JANITOR_QUEUE_URL"], "Ref")),
        "JanitorWorkQueue"
    );
    let reserved = tagged(&janitor["ReservedConcurrentExecutions"], "If");
    assert_eq!(reserved[0].as_str(), Some("JanitorFansOut"));
    assert_eq!(
        scalar_text(tagged(&reserved[1], "Ref")),
        "WorkMaximumConcurrency"
    );
    assert_eq!(number(&reserved[2]), 1);
    let mapping = t["Resources"]
        .as_mapping()
        .unwrap()
        .values()
        .find(|r| {
            r["Type"].as_str() == Some("AWS::Lambda::EventSourceMapping")
                && scalar_text(tagged(&r["Properties"]["FunctionName"], "Ref"))
                    == "CacheJanitorFunction"
        })
        .expect("the janitor's mapping");
    let enabled = tagged(&mapping["Properties"]["Enabled"], "If");
    assert_eq!(enabled[0].as_str(), Some("JanitorFansOut"));
    assert_eq!(enabled[1].as_bool(), Some(true));
    assert_eq!(enabled[2].as_bool(), Some(false));

    // Who may send to which work queue: the reconciler to the indexer's and the
    // stitcher's, the janitor to its own (the CLI sends with its user's credentials).
    let mut senders: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for function in functions(&t) {
        for queue in queue_policies(&t, function, "SQSSendMessagePolicy") {
            senders.entry(queue).or_default().insert(function);
        }
    }
    for (queue, expected) in [
        ("IndexerWorkQueue", ["ReconcilerFunction"]),
        ("StitcherWorkQueue", ["ReconcilerFunction"]),
        ("JanitorWorkQueue", ["CacheJanitorFunction"]),
        (DEAD_LETTERS, [""]),
    ] {
        let expected: BTreeSet<&str> = expected.into_iter().filter(|f| !f.is_empty()).collect();
        assert_eq!(
            senders.remove(queue).unwrap_or_default(),
            expected,
            "senders to {queue}"
        );
    }
    // The rest are the failure queues, each written by its own function only.
    for (queue, functions) in senders {
        assert_eq!(
            functions.into_iter().collect::<Vec<_>>(),
            [queue.replace("FailureQueue", "Function")],
            "senders to {queue}"
        );
    }
}

/// The reconciler surveys on `ReconcileSchedule` (daily by default) in `ReconcileMode`
/// (dry by default, and `off` disables the schedule), with the indexer's and the
/// stitcher's own settings; it reads ECR, sends work to their queues and writes its
/// reports, and may push, delete or assume nothing.
#[test]
fn the_reconciler_surveys_on_a_schedule_with_the_functions_settings() {
    let t = template();
    let mode = &t["Parameters"]["ReconcileMode"];
    assert_eq!(scalar_text(&mode["Default"]), "dry");
    let modes: BTreeSet<String> = mode["AllowedValues"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(scalar_text)
        .collect();
    assert_eq!(
        modes,
        BTreeSet::from(["off".into(), "dry".into(), "enqueue".into()])
    );
    assert_eq!(
        scalar_text(&t["Parameters"]["ReconcileSchedule"]["Default"]),
        "rate(1 day)"
    );
    let not = tagged(&t["Conditions"]["ReconcileScheduled"], "Not");
    let equals = tagged(&not[0], "Equals");
    assert_eq!(scalar_text(tagged(&equals[0], "Ref")), "ReconcileMode");
    assert_eq!(scalar_text(&equals[1]), "off");

    let reconciler = resource(&t, "ReconcilerFunction");
    assert_eq!(
        reconciler["Metadata"]["BuildProperties"]["Binary"].as_str(),
        Some("reconciler")
    );
    let p = &reconciler["Properties"];
    assert_eq!(number(&p["Timeout"]), 900);
    assert_eq!(number(&p["MemorySize"]), 1024);
    assert_eq!(number(&p["ReservedConcurrentExecutions"]), 1);
    let events = p["Events"].as_mapping().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let schedule = events.values().next().unwrap();
    assert_eq!(schedule["Type"].as_str(), Some("Schedule"));
    let sp = &schedule["Properties"];
    assert_eq!(
        scalar_text(tagged(&sp["Schedule"], "Ref")),
        "ReconcileSchedule"
    );
    let state = tagged(&sp["State"], "If");
    assert_eq!(state[0].as_str(), Some("ReconcileScheduled"));
    assert_eq!(state[1].as_str(), Some("ENABLED"));
    assert_eq!(state[2].as_str(), Some("DISABLED"));
    assert_eq!(
        scalar_text(tagged(&sp["DeadLetterConfig"]["Arn"], "GetAtt")),
        "ReconcilerFailureQueue.Arn"
    );

    let envs = function_envs(&t);
    let env = &envs["reconciler"];
    assert_eq!(
        scalar_text(tagged(&env["RECONCILE_MODE"], "Ref")),
        "ReconcileMode"
    );
    assert_eq!(
        scalar_text(tagged(&env["INDEXER_QUEUE_URL"], "Ref")),
        "IndexerWorkQueue"
    );
    assert_eq!(
        scalar_text(tagged(&env["STITCHER_QUEUE_URL"], "Ref")),
        "StitcherWorkQueue"
    );
    // The survey looks for what the indexer and the stitcher would make: every setting
    // they are given, with the same value, but those that say how the indexer works
    // rather than what it makes.
    let how_not_what = ["LAYER_CONCURRENCY", "MEMORY_BUDGET", "ZTOC_CACHE_BUCKET"];
    for function in ["soci-indexer", "manifest-stitcher"] {
        for (name, value) in &envs[function] {
            if how_not_what.contains(&name.as_str()) {
                assert!(!env.contains_key(name), "the reconciler is given {name}");
                continue;
            }
            assert_eq!(
                env.get(name),
                Some(value),
                "{name} of the reconciler vs {function}"
            );
        }
    }
    assert_eq!(env["REPORT_BUCKET"], envs["cache-janitor"]["REPORT_BUCKET"]);

    // Its role: ECR read, its reports, the two queues; nothing that changes images.
    let policies = p["Policies"].as_sequence().unwrap();
    let managed: BTreeSet<String> = policies
        .iter()
        .filter_map(|p| match p {
            Value::Tagged(tag) if tag.tag == "Ref" => Some(scalar_text(&tag.value)),
            _ => None,
        })
        .collect();
    assert_eq!(managed, BTreeSet::from(["EcrReadPolicy".to_string()]));
    assert_eq!(
        queue_policies(&t, "ReconcilerFunction", "SQSSendMessagePolicy"),
        BTreeSet::from([
            "IndexerWorkQueue".to_string(),
            "StitcherWorkQueue".to_string(),
            "ReconcilerFailureQueue".to_string(),
        ])
    );
    let text = serde_yaml_ng::to_string(&p["Policies"]).unwrap();
    for action in ["ecr:PutImage", "ecr:BatchDeleteImage", "sts:AssumeRole"] {
        assert!(!text.contains(action), "the reconciler may {action}");
    }
    let reports = policies
        .iter()
        .filter_map(|p| match p {
            Value::Tagged(tag) if tag.tag == "If" => Some(&tag.value),
            _ => None,
        })
        .find(|branches| branches[0].as_str() == Some("HasReportBucket"))
        .expect("the reconciler's report statement");
    let statement = &reports[1]["Statement"][0];
    // Put: its reports and its cursor; Get: the cursor where the previous run stopped.
    let actions: BTreeSet<String> = statement["Action"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(scalar_text)
        .collect();
    assert_eq!(
        actions,
        BTreeSet::from(["s3:PutObject".to_string(), "s3:GetObject".to_string()])
    );
    let (resource_arn, _) = sub_with_variables(&statement["Resource"]);
    assert_eq!(resource_arn, "arn:${AWS::Partition}:s3:::${B}/reconciler/*");
}

/// The CLI's `--enqueue` and `--redrive` read the queue URLs from the environment; the
/// stack outputs them, each named after its variable in the description.
#[test]
fn the_stack_outputs_the_queue_urls_the_cli_reads() {
    let t = template();
    for (output, queue, variable) in [
        (
            "IndexerWorkQueueUrl",
            "IndexerWorkQueue",
            "INDEXER_QUEUE_URL",
        ),
        (
            "StitcherWorkQueueUrl",
            "StitcherWorkQueue",
            "STITCHER_QUEUE_URL",
        ),
        (
            "JanitorWorkQueueUrl",
            "JanitorWorkQueue",
            "JANITOR_QUEUE_URL",
        ),
        (
            "WorkDeadLetterQueueUrl",
            DEAD_LETTERS,
            "DEAD_LETTER_QUEUE_URL",
        ),
    ] {
        let o = &t["Outputs"][output];
        // !Ref of an SQS queue is its URL.
        assert_eq!(scalar_text(tagged(&o["Value"], "Ref")), queue, "{output}");
        assert!(
            scalar_text(&o["Description"]).starts_with(variable),
            "{output}: {:?}",
            o["Description"]
        );
    }
}
