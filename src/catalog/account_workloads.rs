//! The workloads of one account and region that hold image references: ECS and Lambda,
//! through their ports ([`crate::catalog::ecs`], [`crate::catalog::lambda`]), as one
//! [`InUseSource`].

use crate::catalog::paginate::Paging;
use crate::catalog::workloads::{InUseError, InUseRef, InUseSource, Protect};

/// ECS and Lambda of one account and region, through their [`crate::catalog::ecs::EcsApi`]
/// and [`crate::catalog::lambda::LambdaApi`] ports.
pub struct Workloads<E, L> {
    /// The ECS API port.
    pub ecs: E,
    /// The Lambda API port.
    pub lambda: L,
    /// The page cap and deadline of every listing.
    pub paging: Paging,
}

impl<E, L> Workloads<E, L> {
    /// ECS and Lambda through these ports, with the default page cap and no deadline.
    pub fn new(ecs: E, lambda: L) -> Self {
        Workloads {
            ecs,
            lambda,
            paging: Paging::default(),
        }
    }

    /// The same, with its listings under `paging` (shared with the catalog's).
    pub fn with_paging(mut self, paging: Paging) -> Self {
        self.paging = paging;
        self
    }
}

#[async_trait::async_trait]
impl<E, L> InUseSource for Workloads<E, L>
where
    E: crate::catalog::ecs::EcsApi,
    L: crate::catalog::lambda::LambdaApi,
{
    async fn collect(&self, protect: &Protect) -> Result<Vec<InUseRef>, InUseError> {
        let mut refs = Vec::new();
        if protect.ecs {
            refs.extend(
                crate::catalog::ecs::images_in_use(
                    &self.ecs,
                    protect.task_definition_revisions,
                    &self.paging,
                )
                .await?,
            );
        }
        if protect.lambda {
            refs.extend(crate::catalog::lambda::images_in_use(&self.lambda, &self.paging).await?);
        }
        refs.sort();
        refs.dedup();
        Ok(refs)
    }
}
