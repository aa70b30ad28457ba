//! The plan: the surveys' work summed per repository and in total, with the Lambda time
//! and cost it would take (serialised as the CLI's `--json`; the CLI draws the table).
//!
//! The time is the indexer's: layer bytes to read over a measured indexing throughput
//! ([`CostModel::throughput`], by default the README's `cargo bench --bench soci` figure).
//! Stitches read a few small manifests: they are counted as invocations, not as time.

use super::survey::{Survey, Work, WorkKind};
use serde::Serialize;

/// What the estimate assumes.
#[derive(Debug, Clone, Serialize)]
pub struct CostModel {
    /// Bytes of compressed layer the indexer reads, indexes and publishes per second.
    pub throughput: f64,
    /// Where [`throughput`](Self::throughput) comes from.
    pub throughput_source: String,
    /// The indexer function's memory in MiB (`IndexerMemorySize`).
    pub memory_mib: u64,
    /// USD per GB-second of Lambda compute.
    pub usd_per_gb_second: f64,
    /// USD per million Lambda requests.
    pub usd_per_million_requests: f64,
}

/// The README's measured indexing throughput: `cargo bench --bench soci`, "SOCI index v2
/// (stream, zTOCs, push)", 519.4 MB of gzip layers in 2.32 s from the local registry.
pub const MEASURED_THROUGHPUT: f64 = 224.1e6;

impl Default for CostModel {
    fn default() -> Self {
        Self {
            throughput: MEASURED_THROUGHPUT,
            throughput_source: "README, Benchmarks: `cargo bench --bench soci`, SOCI index v2 \
                                (stream, zTOCs, push), 224.1 MB/s on the 2-core development \
                                machine, not measured in Lambda"
                .into(),
            memory_mib: 2048,
            // AWS Lambda list prices for arm64 (us-east-1, first pricing tier).
            usd_per_gb_second: 0.000_013_333_4,
            usd_per_million_requests: 0.20,
        }
    }
}

impl CostModel {
    /// Lambda-seconds to read and index `bytes` of layers.
    pub fn seconds(&self, bytes: u64) -> f64 {
        bytes as f64 / self.throughput
    }
    /// USD for `seconds` of the indexer and `invocations` requests.
    pub fn cost(&self, seconds: f64, invocations: usize) -> f64 {
        seconds * self.memory_mib as f64 / 1024.0 * self.usd_per_gb_second
            + invocations as f64 * self.usd_per_million_requests / 1e6
    }
}

/// Work summed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Images to index (a stitched tag's indexing included).
    pub images: usize,
    /// Stitched tags to write.
    pub stitches: usize,
    /// Layers to read.
    pub layers: usize,
    /// Layer bytes to read.
    pub bytes: u64,
    /// Lambda invocations (one per event).
    pub invocations: usize,
    /// Estimated Lambda-seconds.
    pub lambda_seconds: f64,
    /// Estimated cost in USD.
    pub cost_usd: f64,
}

impl Totals {
    fn add_work(&mut self, work: &Work) {
        self.invocations += 1;
        match work.kind {
            WorkKind::Index => self.images += 1,
            WorkKind::Stitch => self.stitches += 1,
        }
        self.layers += work.layers;
        self.bytes += work.bytes;
        if let Some(then) = &work.then {
            self.add_work(then);
        }
    }
    fn add(&mut self, other: &Totals) {
        self.images += other.images;
        self.stitches += other.stitches;
        self.layers += other.layers;
        self.bytes += other.bytes;
        self.invocations += other.invocations;
        self.lambda_seconds += other.lambda_seconds;
        self.cost_usd += other.cost_usd;
    }
    fn priced(mut self, model: &CostModel) -> Self {
        self.lambda_seconds = model.seconds(self.bytes);
        self.cost_usd = model.cost(self.lambda_seconds, self.invocations);
        self
    }
}

/// One repository's part of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct RepositoryPlan {
    /// Its totals.
    pub totals: Totals,
    /// The survey, with every piece of work and its event.
    #[serde(flatten)]
    pub survey: Survey,
}

/// The plan over every repository surveyed.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Per repository.
    pub repositories: Vec<RepositoryPlan>,
    /// Over all of them.
    pub total: Totals,
    /// What the estimate assumes.
    pub cost_model: CostModel,
}

impl Plan {
    /// The plan of `surveys` under `model`.
    pub fn new(surveys: Vec<Survey>, model: CostModel) -> Self {
        let mut total = Totals::default();
        let repositories = surveys
            .into_iter()
            .map(|survey| {
                let mut totals = Totals::default();
                for work in &survey.work {
                    totals.add_work(work);
                }
                let totals = totals.priced(&model);
                total.add(&totals);
                RepositoryPlan { totals, survey }
            })
            .collect();
        Plan {
            repositories,
            total,
            cost_model: model,
        }
    }

    /// True when no repository has work.
    pub fn is_empty(&self) -> bool {
        self.repositories.iter().all(|r| r.survey.work.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_seconds_times_memory_times_price_plus_requests() {
        let model = CostModel {
            throughput: 100e6,
            memory_mib: 2048,
            usd_per_gb_second: 0.00001,
            usd_per_million_requests: 0.2,
            ..CostModel::default()
        };
        assert_eq!(model.seconds(500_000_000), 5.0);
        let cost = model.cost(5.0, 1_000_000);
        assert!((cost - (5.0 * 2.0 * 0.00001 + 0.2)).abs() < 1e-12, "{cost}");
    }
}
