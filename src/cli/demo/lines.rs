//! How the demo prints what each handler returned, and which pushes a result makes.

use super::*;

/// What one handler returned.
pub(super) enum Handled {
    Indexer(IndexerOutput),
    Stitcher(StitcherOutput),
    Janitor(JanitorOutput),
}

/// `skipped (code): reason` when the handler's result is a skip decision.
pub(super) fn skip_line(decision: Option<&DecisionRecord>) -> Option<String> {
    decision
        .and_then(DecisionRecord::skip)
        .map(|(code, reason)| format!("skipped ({code}): {reason}"))
}

pub(super) fn describe(handled: &Handled) -> String {
    match handled {
        Handled::Indexer(o) => describe_soci(o),
        Handled::Stitcher(o) => describe_stitch(o),
        Handled::Janitor(o) => describe_janitor(o),
    }
}

pub(super) fn describe_soci(result: &IndexerOutput) -> String {
    if let Some(line) = skip_line(Some(&result.decision)) {
        return line;
    }
    let Some(outcome) = &result.outcome else {
        return "no outcome".into();
    };
    if let Some(why) = &outcome.skipped {
        return format!("nothing to do: {why}");
    }
    let platforms: Vec<String> = outcome
        .platforms
        .iter()
        .map(|p| {
            format!(
                "{}: {} ({} from cache), {} below MIN_LAYER_SIZE",
                p.platform,
                format::count(p.ztocs as u64, "zTOC", "zTOCs"),
                p.ztocs_from_cache,
                format::count(p.layers_skipped as u64, "layer", "layers"),
            )
        })
        .collect();
    format!(
        "built SOCI index v2 {} -> {REPOSITORY}:{} ({}; read {})",
        format::short_digest(outcome.output.as_deref().unwrap_or("?")),
        outcome.tag.as_deref().unwrap_or("(untagged)"),
        platforms.join("; "),
        format::bytes(outcome.bytes_read),
    )
}

pub(super) fn describe_stitch(result: &StitcherOutput) -> String {
    if let Some(line) = skip_line(Some(&result.decision)) {
        return line;
    }
    let Some(o) = &result.outcome else {
        return "no outcome".into();
    };
    let indexed = |verb: &str, target: &str, index: &StitchedIndex| {
        format!(
            "{verb} {REPOSITORY}:{target} = index {} of {}",
            format::short_digest(&index.digest.to_string()),
            index.platforms.join(", ")
        )
    };
    match o {
        StitchOutcome::Ignored { tag, reason } => format!("ignored: {tag} {reason}"),
        StitchOutcome::Incomplete {
            target,
            present,
            missing,
        } => format!(
            "waiting: {REPOSITORY}:{target} still needs {} (has {})",
            missing.join(", "),
            present.join(", ")
        ),
        StitchOutcome::Written { target, index } => indexed("stitched", target, index),
        StitchOutcome::Unchanged { target, index } => indexed("unchanged", target, index),
        StitchOutcome::WouldWrite { target, index } => indexed("would-write", target, index),
    }
}

pub(super) fn describe_janitor(result: &JanitorOutput) -> String {
    if let Some(line) = skip_line(result.decision.as_ref()) {
        return line;
    }
    let Some(report) = &result.report else {
        return "no report".into();
    };
    if let Some(why) = &report.ignored {
        return format!("ignored: {why}");
    }
    let repositories: Vec<String> = report
        .repositories
        .iter()
        .map(|r| {
            let planned: Vec<String> = r
                .planned
                .iter()
                .map(|d| {
                    let tags = if d.tags.is_empty() {
                        "untagged".to_string()
                    } else {
                        d.tags.join(",")
                    };
                    format!("{} ({tags})", format::short_digest(&d.digest.to_string()))
                })
                .collect();
            format!(
                "{}: {}, {} planned for deletion{}, {} kept",
                r.repository,
                format::count(r.images as u64, "image", "images"),
                planned.len(),
                if planned.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", planned.join(" "))
                },
                r.kept
            )
        })
        .collect();
    format!(
        "{} ({}): {}; deleted {}",
        report.trigger,
        if report.dry_run { "DRY_RUN" } else { "live" },
        repositories.join("; "),
        report.deleted
    )
}

/// The manifests a handler pushed, in push order, from its result.
pub(super) fn pushes_of(handled: &Handled) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    match handled {
        // create_soci pushes the SOCI index manifests, the rewritten image manifests,
        // then the tagged index; an idempotent skip pushes nothing.
        Handled::Indexer(PushOutput {
            outcome: Some(o), ..
        }) if o.skipped.is_none() => {
            out.extend(
                o.platforms
                    .iter()
                    .filter_map(|p| p.soci_index.clone())
                    .map(|d| (d, None)),
            );
            out.extend(
                o.platforms
                    .iter()
                    .filter_map(|p| p.rewritten_manifest.clone())
                    .map(|d| (d, None)),
            );
            if let Some(index) = &o.output {
                out.push((index.clone(), o.tag.clone()));
            }
        }
        Handled::Stitcher(PushOutput {
            outcome: Some(StitchOutcome::Written { target, index }),
            ..
        }) => out.push((index.digest.to_string(), Some(target.clone()))),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indexer(outcome: Value) -> Handled {
        Handled::Indexer(
            serde_json::from_value(json!({
                "function": "soci-indexer",
                "decision": {"decision": "work", "repository": "app", "tag": "1.0",
                    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
                "outcome": outcome,
            }))
            .unwrap(),
        )
    }

    fn platform(soci: &str, rewritten: &str) -> Value {
        json!({"platform": "linux/amd64", "manifest": "sha256:00", "soci_index": soci,
            "rewritten_manifest": rewritten, "ztocs": 1, "ztocs_from_cache": 0,
            "layers_skipped": 1, "bytes_read": 1})
    }

    #[test]
    fn soci_pushes_are_children_first_then_the_tagged_index() {
        let result = indexer(json!({
            "repository": "app", "source": "sha256:00", "bytes_read": 2, "seconds": 0.1,
            "output": "sha256:cc", "tag": "1.0-soci",
            "platforms": [platform("sha256:a1", "sha256:b1"), platform("sha256:a2", "sha256:b2")],
        }));
        let pushes = pushes_of(&result);
        let digests: Vec<&str> = pushes.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(
            digests,
            [
                "sha256:a1",
                "sha256:a2",
                "sha256:b1",
                "sha256:b2",
                "sha256:cc"
            ]
        );
        assert_eq!(pushes[4].1.as_deref(), Some("1.0-soci"));
        assert!(pushes[..4].iter().all(|(_, t)| t.is_none()));
        // An idempotent skip pushes nothing.
        let skipped = indexer(json!({
            "repository": "app", "source": "sha256:00", "bytes_read": 0, "seconds": 0.1,
            "skipped": "already", "skip_code": "already-indexed", "output": "sha256:cc",
            "tag": "1.0-soci", "platforms": [],
        }));
        assert!(pushes_of(&skipped).is_empty());
    }

    #[test]
    fn only_a_written_stitch_is_a_push() {
        const DIGEST: &str =
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        let stitched = |outcome: &str| {
            serde_json::from_value::<StitcherOutput>(json!({
                "function": "manifest-stitcher",
                "decision": {"decision": "work", "repository": "app", "tag": "1.0-arm64", "digest": DIGEST},
                "outcome": {"outcome": outcome, "target": "1.0", "index": {
                    "media_type": "application/vnd.oci.image.index.v1+json", "digest": DIGEST,
                    "platforms": ["linux/amd64"], "attestations": 0}},
            }))
            .unwrap()
        };
        assert_eq!(
            pushes_of(&Handled::Stitcher(stitched("written"))),
            [(DIGEST.to_string(), Some("1.0".to_string()))]
        );
        assert!(pushes_of(&Handled::Stitcher(stitched("unchanged"))).is_empty());
    }

    #[test]
    fn the_demo_policy_parses_and_selects_the_demo_repository() {
        let policy = demo_policy().unwrap();
        assert!(policy.selects_repository(REPOSITORY));
        assert!(policy.s3_caches.is_empty());
    }

    #[test]
    fn keep_refuses_a_directory_with_content() {
        let dir = tempfile::tempdir().unwrap();
        prepare_keep_dir(dir.path()).unwrap();
        prepare_keep_dir(&dir.path().join("new")).unwrap();
        std::fs::write(dir.path().join("x"), b"x").unwrap();
        let err = prepare_keep_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }
}
