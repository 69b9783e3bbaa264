//! Joining from a peer's snapshot (state sync, [`state_sync`]), serving snapshots to
//! peers.
//!
//! A validator with no blocks (or, with pruning, one whose peers no longer hold the block
//! after its own) asks its peers for their newest snapshot's manifest; if one
//! offers a snapshot, it fetches the chunks (each checked against the manifest, a bad one
//! fetched again from another peer that offered the same snapshot), asks for the commit
//! certificate of the next block (a sync request), and accepts the snapshot only if its
//! execution state restores to its root, the chain state it carries hashes to the digest
//! that state commits to, the certificate names the snapshot's block and root and is
//! signed by a quorum of the genesis set, or by a quorum of the snapshot's set and more
//! than 1/3 of the genesis stake ([`state_sync::verify`]), and validators holding more
//! than 1/3 of the snapshot's stake signed its manifest ([`state_sync::attest`]: the root
//! alone does not bind the bytes strongly enough); else it starts from genesis. Of the
//! snapshots offered it takes the one most genesis stake attests (then the newest). It
//! writes the snapshot, starts its block file after it, and catches up through the host's
//! sync. Each stage is logged with bytes and ms.
//!
//! Restarting from the validator's own block file and snapshots is [`super::recover`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use consensus::host::{app_frame, sync_frame, FRAME_APP, FRAME_MESSAGE};
use consensus::messages::Message;
use consensus::validators::ValidatorSet;
use state_sync::attest::{self, Attestation};
use state_sync::{Assembly, Manifest, SyncMessage};

use super::*;

/// How long a validator waits for its peers' manifests (unless every peer answered).
const MANIFEST_WAIT: Duration = Duration::from_secs(3);
/// The same when peers prune (a validator that misses a snapshot cannot sync from
/// genesis): peers redial a validator that was down for a while only after their pending
/// dial to it times out, so their answers can take seconds.
const MANIFEST_WAIT_PRUNED: Duration = Duration::from_secs(15);
/// How long fetching and checking a snapshot may take before starting from genesis.
const FETCH_LIMIT: Duration = Duration::from_secs(120);
/// Requests are sent again after this long without the answer.
const RESEND: Duration = Duration::from_millis(500);
/// Manifest requests are sent again after this long (the first ones can go out before the
/// links to the peers are up).
const MANIFEST_RESEND: Duration = Duration::from_millis(250);
/// Chunks asked for at once.
const WINDOW: usize = 16;
/// A fetch with no chunk or certificate received for this long starts over from a new
/// manifest, at most [`ATTEMPTS`] times in all.
const STALL: Duration = Duration::from_secs(5);
const ATTEMPTS: u32 = 5;
const STALLED: &str = "stalled";
const TIMED_OUT: &str = "timed out";

/// A joined validator's catch-up, logged once it reaches the peers' height.
pub(super) struct CatchUp {
    since: Instant,
    from: Height,
    target: Height,
    bytes: u64,
}

/// A snapshot offered by peers: its manifest and digest, who offered it, and their
/// attestations of it (signatures checked; each holder's own, so one per holder).
struct Offer {
    manifest: Manifest,
    digest: [u8; 32],
    holders: Vec<ValidatorId>,
    attestations: Vec<Attestation>,
}

/// A fetched snapshot that passed every check ([`Shell::check_snapshot`]): its execution
/// and chain states, how its certificate was trusted, and the stake that attested it.
type Checked = (Execution, ChainState, state_sync::Trust, u64);

/// What the joining validator learned so far.
struct Joining {
    /// Peers that answered with no snapshot worth taking: none, one this validator need
    /// not join from, one without its own valid attestation, or one refused before.
    without: BTreeSet<ValidatorId>,
    /// Snapshots offered before one was chosen (a peer in one offer at most: its latest).
    offers: Vec<Offer>,
    /// The snapshot being fetched and the peers that offered it.
    assembly: Option<(Assembly, Vec<ValidatorId>)>,
    /// The digest of the snapshot being fetched ([`Manifest::snapshot_digest`]).
    chosen: [u8; 32],
    /// The attestations of the snapshot being fetched (as in [`Offer`]).
    attestations: Vec<Attestation>,
    /// Snapshots refused in an earlier attempt (by digest): not offered again.
    refused: BTreeSet<[u8; 32]>,
    /// The certificate of the block after the snapshot (checked when installing).
    next: Option<CommitCertificate>,
    /// Certificates of later blocks, handed to the host once started.
    later: BTreeMap<Height, Received>,
    /// Highest height of a peer's consensus message.
    seen: Height,
    manifest_bytes: u64,
    chunk_bytes: u64,
    cert_bytes: u64,
}

impl Joining {
    fn new() -> Joining {
        Joining {
            without: BTreeSet::new(),
            offers: Vec::new(),
            assembly: None,
            chosen: [0; 32],
            attestations: Vec::new(),
            refused: BTreeSet::new(),
            next: None,
            later: BTreeMap::new(),
            seen: 0,
            manifest_bytes: 0,
            chunk_bytes: 0,
            cert_bytes: 0,
        }
    }

    /// The stake of `genesis` that attested `offer` (signatures were checked on receipt,
    /// one per holder). Only steers the choice: the snapshot is checked against its own
    /// set once fetched.
    fn genesis_attested(offer: &Offer, genesis: &ValidatorSet) -> u64 {
        let stakes = offer.attestations.iter();
        let stakes = stakes.filter_map(|a| genesis.stake_of(&a.signer));
        stakes.fold(0, u64::saturating_add)
    }

    /// Whether some offer is attested by more than 1/3 of `genesis`'s stake.
    fn well_attested(&self, genesis: &ValidatorSet) -> bool {
        let mut stakes = self
            .offers
            .iter()
            .map(|o| Self::genesis_attested(o, genesis));
        stakes.any(|s| genesis.exceeds_one_third(s))
    }

    /// Starts fetching the offer with the most `genesis` stake attesting it (then the most
    /// holders, then the newest); returns its manifest.
    fn choose(&mut self, genesis: &ValidatorSet) -> Option<Manifest> {
        let best = (0..self.offers.len()).max_by_key(|&i| {
            let offer = &self.offers[i];
            let stake = Self::genesis_attested(offer, genesis);
            (stake, offer.holders.len(), offer.manifest.height)
        })?;
        let offer = self.offers.swap_remove(best);
        self.offers.clear();
        self.attestations = offer.attestations;
        self.chosen = offer.digest;
        let manifest = offer.manifest.clone();
        self.assembly = Some((Assembly::new(offer.manifest), offer.holders));
        Some(manifest)
    }

    /// A fresh start: nothing offered, chosen or fetched yet (refusals are kept).
    fn restart(&mut self) {
        self.without.clear();
        self.offers.clear();
        self.assembly = None;
        self.attestations.clear();
        self.next = None;
    }

    /// Peers that answered, each counted once.
    fn answered(&self) -> usize {
        let offering = self.offers.iter().flat_map(|o| &o.holders);
        let peers: BTreeSet<&ValidatorId> = self.without.iter().chain(offering).collect();
        peers.len()
    }

    /// Forgets what `from` answered before (a peer's latest answer counts).
    fn forget(&mut self, from: &ValidatorId) {
        self.without.remove(from);
        for offer in &mut self.offers {
            offer.holders.retain(|h| h != from);
            offer.attestations.retain(|a| a.signer != *from);
        }
        self.offers.retain(|o| !o.holders.is_empty());
    }

    /// Takes `from`'s offer of the snapshot `m` with `from`'s own attestation (signature
    /// checked); an offer without one, or of a snapshot refused before, is not taken.
    fn note_offer(&mut self, from: ValidatorId, m: Manifest, attestation: Option<Attestation>) {
        self.forget(&from);
        let digest = m.snapshot_digest();
        let Some(attestation) = attestation.filter(|_| !self.refused.contains(&digest)) else {
            self.without.insert(from);
            return;
        };
        let offer = match self.offers.iter().position(|o| o.digest == digest) {
            Some(i) => &mut self.offers[i],
            None => {
                self.offers.push(Offer {
                    manifest: m,
                    digest,
                    holders: Vec::new(),
                    attestations: Vec::new(),
                });
                self.offers.last_mut().expect("pushed")
            }
        };
        offer.holders.push(from);
        offer.attestations.push(attestation);
    }
}

impl Shell {
    /// A peer's state-sync request answered (on the bulk lane); `false` if `frame` is not a
    /// state-sync message.
    pub(super) fn serve_state_sync(&mut self, from: ValidatorId, frame: &[u8]) -> bool {
        let Some(message) = frame
            .strip_prefix(&[FRAME_APP])
            .and_then(SyncMessage::decode)
        else {
            return false;
        };
        let held = (self.host.first_certificate_height(), self.blocks.height());
        let held = (held.0.unwrap_or(held.1 + 1), held.1);
        if let Some(answer) = self.server.answer(from, &message, held, now_ns()) {
            self.net
                .send(&from, app_frame(&answer.encode()), Lane::Bulk);
        }
        true
    }

    /// Counts a received frame towards the catch-up and logs its end once the chain
    /// reached the target.
    pub(super) fn note_catch_up(&mut self, frame_bytes: usize) -> Result<(), HostError> {
        let height = self.host.chain().height();
        let Some(c) = self.catch_up.as_mut() else {
            return Ok(());
        };
        c.bytes += frame_bytes as u64;
        if height < c.target {
            return Ok(());
        }
        let c = self.catch_up.take().expect("some");
        self.host.app().event(json!({
            "event": "state_sync_caught_up", "index": self.host.app().index,
            "from": c.from, "height": height, "blocks": height - c.from,
            "bytes": c.bytes, "ms": c.since.elapsed().as_millis() as u64,
        }))
    }

    /// Joins from a peer's snapshot if the block file is empty, or this validator is behind
    /// the blocks its peers still hold, and a peer offers one: returns the snapshot's height
    /// (`None`: recover from the block file, or start from genesis). Called before recovery:
    /// the host has applied nothing yet.
    pub(super) async fn join(
        &mut self,
        rx: &mut Inbox,
        genesis: &ChainState,
        chain_id: &[u8; 32],
        peers: usize,
    ) -> Result<Option<Height>, HostError> {
        let started = Instant::now();
        let mut joining = Joining::new();
        let mut attempts = 0;
        let (manifest, snapshot, manifest_ms, chunks_ms, verify, checked) = loop {
            attempts += 1;
            joining.restart();
            let Some(manifest) = self.ask_manifests(rx, &mut joining, peers).await else {
                return Ok(None);
            };
            let manifest_ms = started.elapsed().as_millis() as u64;
            let fetch = Instant::now();
            let fetched = self.fetch(rx, &mut joining).await;
            let (chunks_ms, verify) = (fetch.elapsed().as_millis() as u64, Instant::now());
            let checked = fetched.and_then(|snapshot| {
                let next = joining.next.as_ref().expect("fetched with its certificate");
                let offer = (&manifest, joining.attestations.as_slice());
                let checked = self.check_snapshot(&snapshot, next, offer, genesis, chain_id)?;
                Ok((snapshot, checked))
            });
            match checked {
                Ok((snapshot, checked)) => {
                    break (manifest, snapshot, manifest_ms, chunks_ms, verify, checked)
                }
                // The peers no longer keep it (they took newer ones): ask again.
                Err(why) if why == STALLED && attempts < ATTEMPTS => continue,
                Err(why) if why != TIMED_OUT && attempts < ATTEMPTS => {
                    // That snapshot is refused: ask again, for another one.
                    self.join_failed(manifest.height, &why)?;
                    joining.refused.insert(joining.chosen);
                }
                Err(why) => return self.join_failed(manifest.height, &why).map(|()| None),
            }
        };
        let (execution, chain, trust, attested) = checked;
        if let Err(why) = self.install(&snapshot, execution, chain) {
            return self.join_failed(manifest.height, &why).map(|()| None);
        }
        self.host.app().event(json!({
            "event": "state_sync", "index": self.host.app().index, "height": snapshot.height,
            "peers_height": joining.seen, "chunks": manifest.hashes.len(),
            "manifest_bytes": joining.manifest_bytes, "manifest_ms": manifest_ms,
            "chunk_bytes": joining.chunk_bytes, "certificate_bytes": joining.cert_bytes,
            "chunks_ms": chunks_ms, "verify_load_ms": verify.elapsed().as_millis() as u64,
            "snapshot_bytes": manifest.total, "trust": trust.name(),
            "attested_stake": attested, "attestations": joining.attestations.len(),
        }))?;
        self.catch_up = Some(CatchUp {
            since: Instant::now(),
            from: snapshot.height,
            target: joining.seen.max(snapshot.height + 1),
            bytes: 0,
        });
        self.pending_frames = joining.later.into_values().collect();
        Ok(Some(snapshot.height))
    }

    /// Whether `m` offers a snapshot this validator should start from: any, with an empty
    /// block file; else one past its height from a peer that pruned the block after it.
    fn worth_joining(&self, m: &Manifest) -> bool {
        let ours = self.blocks.height();
        m.height > 0 && (ours == 0 || (m.height > ours && m.first_block > ours + 1))
    }

    fn join_failed(&self, height: Height, why: &str) -> Result<(), HostError> {
        self.host.app().event(json!({
            "event": "state_sync_refused", "index": self.host.app().index, "height": height,
            "why": why,
        }))
    }

    /// Asks every peer for its manifest until an offered snapshot is attested by more than
    /// 1/3 of the genesis stake, every peer answered, or [`MANIFEST_WAIT`] passed; then
    /// chooses the best offer ([`Shell::choose_offer`]), if any.
    async fn ask_manifests(
        &mut self,
        rx: &mut Inbox,
        joining: &mut Joining,
        peers: usize,
    ) -> Option<Manifest> {
        let wait = match self.prune_keep_blocks {
            0 => MANIFEST_WAIT,
            _ => MANIFEST_WAIT_PRUNED,
        };
        let end = Instant::now() + wait;
        let request = app_frame(&SyncMessage::ManifestRequest.encode());
        while Instant::now() < end && joining.answered() < peers {
            self.net.broadcast(request.clone(), Lane::Bulk);
            let until = (Instant::now() + MANIFEST_RESEND).min(end);
            while let Some(r) = recv_until(rx, until).await {
                self.on_joining_frame(r, joining);
                if self.well_attested(joining) {
                    // Give the others a moment to offer the same one (a bad chunk is then
                    // fetched from them).
                    self.collect_offers(rx, joining).await;
                    return self.choose_offer(joining);
                }
                if joining.answered() >= peers {
                    break;
                }
            }
        }
        self.choose_offer(joining)
    }

    /// Whether some offer is attested by more than 1/3 of the genesis stake (the host
    /// applied nothing yet: its chain is the genesis one).
    fn well_attested(&self, joining: &Joining) -> bool {
        joining.well_attested(self.host.chain().validators())
    }

    /// Starts fetching the best offer ([`Joining::choose`]); returns its manifest.
    fn choose_offer(&self, joining: &mut Joining) -> Option<Manifest> {
        joining.choose(self.host.chain().validators())
    }

    /// Takes further offers of the same snapshot for a short while.
    async fn collect_offers(&mut self, rx: &mut Inbox, joining: &mut Joining) {
        let until = Instant::now() + Duration::from_millis(200);
        while let Some(r) = recv_until(rx, until).await {
            self.on_joining_frame(r, joining);
        }
    }

    /// One frame while joining: requests answered, manifests and chunks taken,
    /// certificates kept.
    fn on_joining_frame(&mut self, r: Received, joining: &mut Joining) {
        match r.frame.first() {
            Some(&FRAME_MESSAGE) => self.on_joining_message(r, joining),
            Some(&FRAME_APP) => {
                if let Some(message) = SyncMessage::decode(&r.frame[1..]) {
                    self.on_sync_message(r.from, message, r.frame.len(), joining);
                }
            }
            _ => {}
        }
    }

    /// A manifest's attestation if it is `from`'s own and its signature checks.
    fn checked_attestation(&self, from: &ValidatorId, m: &Manifest) -> Option<Attestation> {
        let chain_id = self.host.chain().chain_id();
        let own = m.attestation.filter(|a| a.signer == *from);
        own.filter(|a| a.signs(m, chain_id, &Ed25519))
    }

    /// A state-sync message while joining.
    fn on_sync_message(
        &mut self,
        from: ValidatorId,
        message: SyncMessage,
        bytes: usize,
        joining: &mut Joining,
    ) {
        match message {
            // A peer with no snapshot, or (when this validator has blocks) one that still
            // holds the block after ours: sync from it, no snapshot needed.
            SyncMessage::Manifest(m) if !self.worth_joining(&m) => {
                joining.without.insert(from);
            }
            SyncMessage::Manifest(m) => {
                joining.manifest_bytes += bytes as u64;
                let attestation = self.checked_attestation(&from, &m);
                match joining.assembly.as_mut() {
                    Some((_, holders)) => {
                        // Chosen already: a new holder of the same snapshot helps serve it.
                        let known = holders.contains(&from);
                        if let Some(a) = attestation.filter(|_| !known) {
                            if m.snapshot_digest() == joining.chosen {
                                holders.push(from);
                                joining.attestations.push(a);
                            }
                        }
                    }
                    None => joining.note_offer(from, m, attestation),
                }
            }
            SyncMessage::Chunk {
                height,
                index,
                bytes: chunk,
            } => {
                joining.chunk_bytes += bytes as u64;
                let Some((assembly, holders)) = joining.assembly.as_mut() else {
                    return;
                };
                if let Err(why) = assembly.accept(height, index, chunk) {
                    // A peer serving bad chunks is asked for nothing more.
                    holders.retain(|h| *h != from);
                    stderr_line(format_args!(
                        "nexus validator: state sync: {why} (from a peer, dropped)"
                    ));
                }
            }
            request => {
                if let Some(answer) = self.server.answer(from, &request, (1, 0), now_ns()) {
                    self.net
                        .send(&from, app_frame(&answer.encode()), Lane::Bulk);
                }
            }
        }
    }

    /// A consensus message while joining: its height noted; certificates after the
    /// snapshot's height kept.
    fn on_joining_message(&mut self, r: Received, joining: &mut Joining) {
        let Ok(message) = Message::decode(&r.frame[1..]) else {
            return;
        };
        joining.seen = joining.seen.max(message.height());
        let Message::Commit(c) = message else {
            return;
        };
        let Some(snapshot_height) = joining.assembly.as_ref().map(|(a, _)| a.manifest.height)
        else {
            return;
        };
        // More than 1/3 of the genesis stake must sign it (checked on receipt, so that a
        // peer's forged certificate does not displace a good one; the snapshot is checked
        // against it in full once its chain state is known). The host applied nothing yet:
        // its chain is the genesis one.
        let chain = self.host.chain();
        let certified =
            || state_sync::vouched_by_genesis(&c, chain.validators(), chain.chain_id(), &Ed25519);
        if c.block.height == snapshot_height + 1 && joining.next.is_none() && certified() {
            joining.cert_bytes += r.frame.len() as u64;
            joining.next = Some(c);
        } else if c.block.height > snapshot_height + 1 {
            joining.later.entry(c.block.height).or_insert(r);
        }
    }

    /// Fetches every chunk and the next block's certificate; the assembled snapshot (its
    /// chunks checked, not yet its root).
    async fn fetch(&mut self, rx: &mut Inbox, joining: &mut Joining) -> Result<Snapshot, String> {
        let end = Instant::now() + FETCH_LIMIT;
        let mut turn = 0usize;
        let mut progress = (usize::MAX, false, Instant::now());
        loop {
            let (assembly, holders) = joining.assembly.as_ref().expect("a manifest");
            if holders.is_empty() {
                return Err("no peer left that serves good chunks".into());
            }
            if joining.next.is_some() {
                if let Some(done) = assembly.finish() {
                    return done.map_err(|e| e.to_string());
                }
            }
            if Instant::now() >= end {
                return Err(TIMED_OUT.into());
            }
            let now = (assembly.missing().len(), joining.next.is_some());
            if now != (progress.0, progress.1) {
                progress = (now.0, now.1, Instant::now());
            } else if progress.2.elapsed() >= STALL {
                return Err(STALLED.into());
            }
            let height = assembly.manifest.height;
            let asked: Vec<u32> = assembly.missing().into_iter().take(WINDOW).collect();
            for &index in &asked {
                let to = holders[turn % holders.len()];
                turn += 1;
                let ask = SyncMessage::ChunkRequest { height, index };
                self.net.send(&to, app_frame(&ask.encode()), Lane::Bulk);
            }
            if joining.next.is_none() {
                for to in holders.clone() {
                    self.net.send(&to, sync_frame(height + 1), Lane::Consensus);
                }
            }
            let until = Instant::now() + RESEND;
            while let Some(r) = recv_until(rx, until).await {
                self.on_joining_frame(r, joining);
                let (a, _) = joining.assembly.as_ref().expect("a manifest");
                let missing = a.missing();
                if joining.next.is_some() && asked.iter().all(|i| !missing.contains(i)) {
                    break;
                }
            }
        }
    }

    /// Opens `snapshot` (execution state and chain state, each checked against the
    /// execution root), checks it against `next` (the certificate of the block after it),
    /// the genesis set and its own chain state's set, and checks that more than 1/3 of that
    /// set's stake attested its manifest (`offer`: the manifest and the attestations
    /// received). Returns the opened states, how the certificate was trusted and the stake
    /// that attested the snapshot.
    fn check_snapshot(
        &self,
        snapshot: &Snapshot,
        next: &CommitCertificate,
        (manifest, attestations): (&Manifest, &[Attestation]),
        genesis: &ChainState,
        chain_id: &[u8; 32],
    ) -> Result<Checked, String> {
        let (execution, chain) = self.host.app().open_snapshot(snapshot, chain_id)?;
        let trust = state_sync::verify(
            snapshot,
            next,
            genesis.validators(),
            &chain,
            chain_id,
            &Ed25519,
        )
        .map_err(|e| e.to_string())?;
        let attested = attest::check_attested(
            manifest,
            attestations,
            chain.validators(),
            chain_id,
            &Ed25519,
        )
        .map_err(|e| e.to_string())?;
        Ok((execution, chain, trust, attested))
    }

    /// Installs a checked snapshot ([`Shell::check_snapshot`]): writes it, makes its
    /// states this validator's, and starts the block file and the host after it.
    fn install(
        &mut self,
        snapshot: &Snapshot,
        execution: Execution,
        chain: ChainState,
    ) -> Result<(), String> {
        let app = self.host.app_mut();
        // Written first: if writing fails, nothing is installed; a snapshot past the
        // (empty) block file is never loaded, and nothing after the install can fail.
        snapshot::write(&app.snapshots, snapshot).map_err(|e| e.to_string())?;
        app.install_execution(execution, snapshot);
        self.blocks
            .start_after(snapshot.height)
            .map_err(|e| e.to_string())?;
        let last = (Hash(snapshot.block_id), snapshot.block_timestamp_ns);
        self.host
            .start_from_snapshot(chain, Hash(snapshot.exec_root), last);
        Ok(())
    }

    /// After the snapshot of block `height` is durable (the writer reported it): drops the
    /// blocks before `height - prune_keep_blocks` from the block file and the host (a
    /// restart starts from the snapshot, which carries the chain state).
    pub(super) fn maybe_prune(&mut self, height: Height) -> Result<(), HostError> {
        let every = self.host.app().snapshot_every;
        let keep = self.prune_keep_blocks;
        if keep == 0 || every == 0 || !height.is_multiple_of(every) || height <= keep {
            return Ok(());
        }
        let through = height - keep;
        let removed = self.blocks.prune_through(through)?;
        self.host.prune_certificates(through);
        let file_bytes = std::fs::metadata(self.blocks.path()).map_or(0, |m| m.len());
        self.host.app().event(json!({
            "event": "pruned", "index": self.host.app().index, "through": through,
            "bytes_removed": removed, "file_bytes": file_bytes,
        }))
    }
}

/// The next frame received before `until`, if any.
async fn recv_until(rx: &mut Inbox, until: Instant) -> Option<Received> {
    let until = tokio::time::Instant::from_std(until);
    tokio::time::timeout_at(until, rx.recv())
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use consensus::validators::Validator;
    use state_sync::attest::Attester;

    use super::*;

    const CHAIN: [u8; 32] = [7; 32];

    fn keys() -> Vec<Keypair> {
        (1..=4u8).map(|i| Keypair::from_seed([i; 32])).collect()
    }

    fn genesis(keys: &[Keypair]) -> ValidatorSet {
        let validators = keys.iter().map(|k| Validator {
            id: k.id(),
            stake: 1,
        });
        ValidatorSet::new(validators.collect()).expect("a set")
    }

    fn manifest(height: u64) -> Manifest {
        Manifest {
            height,
            exec_root: [1; 32],
            block_id: [2; 32],
            total: 10,
            chunk_size: 10,
            hashes: vec![[height as u8; 32]],
            first_block: 1,
            attestation: None,
        }
    }

    /// `k`'s offer of `m`, with its own attestation.
    fn offer(joining: &mut Joining, k: &Keypair, m: &Manifest) {
        let a = Attester::new(k.clone(), CHAIN).attest(m);
        joining.note_offer(k.id(), m.clone(), Some(a));
    }

    #[test]
    fn a_peer_counts_once_and_its_latest_answer_replaces_the_earlier() {
        let keys = keys();
        let mut joining = Joining::new();
        joining.without.insert(keys[1].id());
        offer(&mut joining, &keys[1], &manifest(25));
        offer(&mut joining, &keys[1], &manifest(25));
        assert_eq!(joining.answered(), 1);
        assert_eq!(joining.offers.len(), 1);
        assert_eq!(joining.offers[0].attestations.len(), 1);
        assert!(!joining.without.contains(&keys[1].id()));
        // A newer snapshot from the same peer moves it: the old offer is gone.
        offer(&mut joining, &keys[1], &manifest(50));
        assert_eq!(joining.offers.len(), 1);
        assert_eq!(joining.offers[0].manifest.height, 50);
        // An offer without an attestation is an answer, not an offer.
        joining.note_offer(keys[2].id(), manifest(75), None);
        assert_eq!((joining.answered(), joining.offers.len()), (2, 1));
        // A refused snapshot is not taken again.
        joining.refused.insert(manifest(50).snapshot_digest());
        offer(&mut joining, &keys[3], &manifest(50));
        assert_eq!(joining.offers[0].holders, vec![keys[1].id()]);
        assert!(joining.without.contains(&keys[3].id()));
    }

    /// Honest peers 1 and 2 hold the snapshot at 25; peer 3 alone claims a far newer one.
    /// The better-attested one is chosen, not the newest.
    #[test]
    fn the_offer_most_genesis_stake_attests_is_chosen_not_the_newest() {
        let keys = keys();
        let set = genesis(&keys);
        let mut joining = Joining::new();
        offer(&mut joining, &keys[3], &manifest(1_000_000));
        assert!(
            !joining.well_attested(&set),
            "one of four is not more than 1/3"
        );
        offer(&mut joining, &keys[1], &manifest(25));
        offer(&mut joining, &keys[2], &manifest(25));
        assert!(joining.well_attested(&set));
        let chosen = joining.choose(&set).expect("an offer");
        assert_eq!(chosen.height, 25);
        assert_eq!(joining.attestations.len(), 2);
        assert_eq!(joining.chosen, manifest(25).snapshot_digest());
        let (_, holders) = joining.assembly.as_ref().expect("fetching");
        assert_eq!(holders, &vec![keys[1].id(), keys[2].id()]);
        // Equal stake: more holders, then the newer.
        let mut joining = Joining::new();
        offer(&mut joining, &keys[1], &manifest(25));
        offer(&mut joining, &keys[2], &manifest(50));
        assert_eq!(joining.choose(&set).map(|m| m.height), Some(50));
    }
}
