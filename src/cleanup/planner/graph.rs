//! The reference graph of one repository: who lists whom (index entries, SOCI
//! indexes), who refers to whom (subjects), the kept set closed over it, and the order
//! deletions must follow.

use super::first_verdict::Verdict;
use crate::catalog::ImageRecord;
use crate::format::short_digest;
use crate::oci::Sha256Digest;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};

/// The images of a repository with their edges, by position in the listing.
pub(super) struct Graph<'a> {
    pub images: &'a [ImageRecord],
    /// Position of each digest.
    pub at: HashMap<&'a Sha256Digest, usize>,
    /// parents[i]: images whose references include i.
    pub parents: Vec<Vec<usize>>,
    /// referrers[i]: images whose subject is i.
    pub referrers: Vec<Vec<usize>>,
}

impl<'a> Graph<'a> {
    pub fn new(images: &'a [ImageRecord]) -> Self {
        let at: HashMap<&Sha256Digest, usize> = images
            .iter()
            .enumerate()
            .map(|(i, im)| (&im.digest, i))
            .collect();
        let mut parents: Vec<Vec<usize>> = vec![Vec::new(); images.len()];
        let mut referrers: Vec<Vec<usize>> = vec![Vec::new(); images.len()];
        for (i, im) in images.iter().enumerate() {
            for r in im.references() {
                if let Some(&j) = at.get(r) {
                    if j != i && !parents[j].contains(&i) {
                        parents[j].push(i);
                    }
                }
            }
            if let Some(&j) = im.subject.as_ref().and_then(|s| at.get(s)) {
                if j != i {
                    referrers[j].push(i);
                }
            }
        }
        Graph {
            images,
            at,
            parents,
            referrers,
        }
    }

    /// The least kept set containing the roots and closed under: kept → its references and
    /// its subject; kept → its following referrers and entries.
    pub fn closure(
        &self,
        verdicts: &[Verdict],
        forced: &HashMap<usize, String>,
    ) -> (Vec<bool>, HashMap<usize, String>) {
        let (images, at, referrers) = (self.images, &self.at, &self.referrers);
        let mut kept = vec![false; images.len()];
        let mut why: HashMap<usize, String> = HashMap::new();
        let mut queue = VecDeque::new();
        for (i, v) in verdicts.iter().enumerate() {
            if matches!(v, Verdict::Keep { .. }) || forced.contains_key(&i) {
                kept[i] = true;
                queue.push_back(i);
            }
        }
        while let Some(i) = queue.pop_front() {
            let im = &images[i];
            let mut reach = |j: usize, reason: String, kept: &mut Vec<bool>| {
                if !kept[j] {
                    kept[j] = true;
                    why.insert(j, reason);
                    queue.push_back(j);
                }
            };
            for r in &im.children {
                if let Some(&j) = at.get(r) {
                    reach(
                        j,
                        format!("listed by kept index {}", short_digest(&im.digest)),
                        &mut kept,
                    );
                }
            }
            if let Some(&j) = im.soci_index.as_ref().and_then(|s| at.get(s)) {
                reach(
                    j,
                    format!("SOCI index of kept image {}", short_digest(&im.digest)),
                    &mut kept,
                );
            }
            if let Some(&j) = im.subject.as_ref().and_then(|s| at.get(s)) {
                reach(
                    j,
                    format!("subject of kept referrer {}", short_digest(&im.digest)),
                    &mut kept,
                );
            }
            for &j in &referrers[i] {
                if matches!(verdicts[j], Verdict::Follow) {
                    reach(
                        j,
                        format!("referrer of kept image {}", short_digest(&im.digest)),
                        &mut kept,
                    );
                }
            }
        }
        (kept, why)
    }

    /// The images not kept, each after every deleted image that references it or refers to
    /// it; oldest first among those free to go.
    pub fn deletion_order(&self, kept: &[bool]) -> Vec<usize> {
        let (images, at) = (self.images, &self.at);
        let deleted: Vec<usize> = (0..images.len()).filter(|&i| !kept[i]).collect();
        let mut indegree: HashMap<usize, usize> = deleted.iter().map(|&i| (i, 0)).collect();
        let mut out_edges: HashMap<usize, Vec<usize>> = HashMap::new();
        for &i in &deleted {
            let im = &images[i];
            let targets = im.references().chain(im.subject.iter());
            let mut seen = HashSet::new();
            for t in targets {
                if let Some(&j) = at.get(t) {
                    if j != i && !kept[j] && seen.insert(j) {
                        out_edges.entry(i).or_default().push(j);
                        *indegree.get_mut(&j).unwrap() += 1;
                    }
                }
            }
        }
        let key = |i: usize| Reverse((images[i].pushed_at, images[i].digest.clone(), i));
        let mut ready: BinaryHeap<_> = indegree
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&i, _)| key(i))
            .collect();
        let mut order = Vec::with_capacity(deleted.len());
        while let Some(Reverse((_, _, i))) = ready.pop() {
            order.push(i);
            for &j in out_edges.get(&i).map(Vec::as_slice).unwrap_or(&[]) {
                let d = indegree.get_mut(&j).unwrap();
                *d -= 1;
                if *d == 0 {
                    ready.push(key(j));
                }
            }
        }
        // Content addressing makes cycles impossible; should a registry report one anyway,
        // those images are kept rather than deleted in an unsafe order (see build_plan).
        order
    }
}
