//! Images in use in other accounts: `infra/in-use-reader.yaml`'s role grants exactly the
//! calls of the janitor's in-use listing, to the janitor's role only, and the janitor's
//! role in `template.yaml` may assume it only when consumer accounts are listed.

use crate::template::{root, scalar_text, tagged, template};
use serde_yaml_ng::Value;
use std::collections::BTreeSet;

fn in_use_reader() -> Value {
    let text = std::fs::read_to_string(root().join("infra/in-use-reader.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).expect("infra/in-use-reader.yaml is YAML")
}

fn actions_of(statements: &Value) -> BTreeSet<String> {
    statements
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|s| s["Action"].as_sequence().unwrap())
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The ECS and Lambda API calls the in-use listing makes, from its SDK adapters
/// (`.describe_task_definition()` -> `ecs:DescribeTaskDefinition`).
fn in_use_calls() -> BTreeSet<String> {
    let call = regex::Regex::new(r"(?m)^\s*\.((?:list|describe|get)_[a-z_]+)\(\)").unwrap();
    let mut actions = BTreeSet::new();
    for (service, file) in [
        ("ecs", "src/catalog/ecs.rs"),
        ("lambda", "src/catalog/lambda.rs"),
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        for cap in call.captures_iter(&text) {
            let pascal: String = cap[1]
                .split('_')
                .map(|w| w[..1].to_uppercase() + &w[1..])
                .collect();
            actions.insert(format!("{service}:{pascal}"));
        }
    }
    actions
}

/// The member-account role grants exactly the calls the janitor's in-use listing makes
/// (the same as the janitor's own role), and trusts only the janitor's role in the
/// central account, named by parameters so that one template serves every account.
#[test]
fn the_in_use_reader_role_grants_exactly_the_listing_calls_to_the_janitor_only() {
    let calls = in_use_calls();
    assert!(
        calls.len() >= 10,
        "the scan of the SDK adapters found only {calls:?}"
    );
    let reader = in_use_reader();
    let role = &reader["Resources"]["InUseReaderRole"];
    assert_eq!(role["Type"].as_str(), Some("AWS::IAM::Role"));
    let policies = role["Properties"]["Policies"].as_sequence().unwrap();
    assert_eq!(policies.len(), 1);
    let statements = &policies[0]["PolicyDocument"]["Statement"];
    assert_eq!(
        actions_of(statements),
        calls,
        "in-use-reader.yaml vs src/catalog"
    );
    for s in statements.as_sequence().unwrap() {
        assert_eq!(s["Effect"].as_str(), Some("Allow"));
    }
    // The janitor's own role has the same read-only statements.
    let t = template();
    let janitor_policies = t["Resources"]["CacheJanitorFunction"]["Properties"]["Policies"]
        .as_sequence()
        .unwrap();
    let in_use = janitor_policies
        .iter()
        .find(|p| {
            p["Statement"].as_sequence().is_some_and(|s| {
                s.iter()
                    .any(|s| s["Sid"].as_str() == Some("ImagesInUseEcs"))
            })
        })
        .expect("the janitor's in-use statements");
    assert_eq!(
        actions_of(&in_use["Statement"]),
        calls,
        "template.yaml vs src/catalog"
    );

    // Trust: one statement, the central account narrowed to the janitor's role.
    let trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        .as_sequence()
        .unwrap();
    assert_eq!(trust.len(), 1);
    let trust = &trust[0];
    assert_eq!(trust["Effect"].as_str(), Some("Allow"));
    assert_eq!(trust["Action"].as_str(), Some("sts:AssumeRole"));
    let principal = trust["Principal"].as_mapping().unwrap();
    assert_eq!(
        principal.len(),
        1,
        "no service or other principal: {principal:?}"
    );
    assert_eq!(
        scalar_text(tagged(&trust["Principal"]["AWS"], "Sub")),
        "arn:${AWS::Partition}:iam::${CentralAccountId}:root"
    );
    assert_eq!(
        scalar_text(tagged(
            &trust["Condition"]["ArnEquals"]["aws:PrincipalArn"],
            "Sub"
        )),
        "arn:${AWS::Partition}:iam::${CentralAccountId}:role/${JanitorRoleName}"
    );
    let external_id = tagged(&trust["Condition"]["StringEquals"], "If");
    assert_eq!(external_id[0].as_str(), Some("HasExternalId"));
    assert_eq!(
        scalar_text(tagged(&external_id[1]["sts:ExternalId"], "Ref")),
        "ExternalId"
    );

    // Parameters only: no account id written into the template (StackSet-ready), and the
    // role's default name is the one the central stack assumes by default.
    let text = std::fs::read_to_string(root().join("infra/in-use-reader.yaml")).unwrap();
    assert!(
        !regex::Regex::new(r"\b[0-9]{12}\b").unwrap().is_match(&text),
        "an account id is hard-coded in infra/in-use-reader.yaml"
    );
    for parameter in [
        "CentralAccountId",
        "JanitorRoleName",
        "RoleName",
        "ExternalId",
    ] {
        assert!(reader["Parameters"].get(parameter).is_some(), "{parameter}");
    }
    assert_eq!(
        scalar_text(tagged(&role["Properties"]["RoleName"], "Ref")),
        "RoleName"
    );
    assert_eq!(
        scalar_text(&reader["Parameters"]["RoleName"]["Default"]),
        scalar_text(&t["Parameters"]["InUseReaderRoleName"]["Default"])
    );
    assert_eq!(
        scalar_text(&reader["Parameters"]["ExternalId"]["Default"]),
        ""
    );
}

/// With consumer accounts listed, the janitor's role may assume the reader role by name in
/// any account (each account's trust policy decides); with none, it may assume nothing.
#[test]
fn the_janitor_may_assume_the_reader_role_only_when_consumer_accounts_are_listed() {
    let t = template();
    let parameter = &t["Parameters"]["ConsumerAccounts"];
    assert_eq!(scalar_text(&parameter["Default"]), "");
    let pattern = regex::Regex::new(&scalar_text(&parameter["AllowedPattern"])).unwrap();
    for ok in [
        "",
        "111111111111",
        "111111111111,222222222222",
        "111111111111:eu-west-1,us-east-1,222222222222",
    ] {
        assert!(pattern.is_match(ok), "{ok}");
    }
    for bad in [
        "1111",
        "eu-west-1",
        "111111111111:",
        "111111111111;222222222222",
    ] {
        assert!(!pattern.is_match(bad), "{bad}");
    }
    let not = tagged(&t["Conditions"]["HasConsumerAccounts"], "Not");
    let equals = tagged(&not[0], "Equals");
    assert_eq!(scalar_text(tagged(&equals[0], "Ref")), "ConsumerAccounts");
    assert_eq!(scalar_text(&equals[1]), "");

    let janitor = &t["Resources"]["CacheJanitorFunction"]["Properties"];
    let assume: Vec<&Value> = janitor["Policies"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|p| {
            serde_yaml_ng::to_string(p)
                .unwrap()
                .contains("sts:AssumeRole")
        })
        .collect();
    assert_eq!(assume.len(), 1, "{assume:?}");
    let branches = tagged(assume[0], "If");
    assert_eq!(branches[0].as_str(), Some("HasConsumerAccounts"));
    assert_eq!(scalar_text(tagged(&branches[2], "Ref")), "AWS::NoValue");
    let statement = &branches[1]["Statement"][0];
    assert_eq!(statement["Action"].as_str(), Some("sts:AssumeRole"));
    assert_eq!(
        scalar_text(tagged(&statement["Resource"], "Sub")),
        "arn:${AWS::Partition}:iam::*:role/${InUseReaderRoleName}"
    );
    // No other function may assume anything.
    for function in [
        "SociIndexerFunction",
        "ManifestStitcherFunction",
        "ReconcilerFunction",
    ] {
        let policies = serde_yaml_ng::to_string(&t["Resources"][function]["Properties"]).unwrap();
        assert!(!policies.contains("sts:AssumeRole"), "{function}");
    }
    // The janitor gets both as settings (names checked against settings.rs above).
    let env = &janitor["Environment"]["Variables"];
    assert_eq!(
        scalar_text(tagged(&env["CONSUMER_ACCOUNTS"], "Ref")),
        "ConsumerAccounts"
    );
    assert_eq!(
        scalar_text(tagged(&env["IN_USE_READER_ROLE"], "Ref")),
        "InUseReaderRoleName"
    );
    // The janitor's role name, which each consumer account's stack is given.
    assert_eq!(
        scalar_text(tagged(
            &t["Outputs"]["CacheJanitorRoleName"]["Value"],
            "Ref"
        )),
        "CacheJanitorFunctionRole"
    );
}
