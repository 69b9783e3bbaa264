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

/// A joined validator's catch-up, logged once it reaches the peers' height.
pub(super) struct CatchUp {
    since: Instant,
    from: Height,
    target: Height,
    bytes: u64,
}

/// A snapshot offered by peers: its manifest, who offered it, and the attestations
/// received for it (signatures checked).
struct Offer {
    manifest: Manifest,
    holders: Vec<ValidatorId>,
    attestations: Vec<Attestation>,
}

/// What the joining validator learned so far.
struct Joining {
    /// Peers that answered "no snapshot".
    without: BTreeSet<ValidatorId>,
    /// Snapshots offered before one was chosen.
    offers: Vec<Offer>,
    /// The snapshot being fetched and the peers that offered it.
    assembly: Option<(Assembly, Vec<ValidatorId>)>,
    /// The attestations of the snapshot being fetched (signatures checked).
    attestations: Vec<Attestation>,
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
    /// Peers that answered: with no snapshot, or with one.
    fn answered(&self) -> usize {
        let offering: BTreeSet<&ValidatorId> =
            self.offers.iter().flat_map(|o| &o.holders).collect();
        self.without.len() + offering.len()
    }

    /// Takes `from`'s offer of the snapshot `m` (attested by `attestation` if it checked).
    fn note_offer(&mut self, from: ValidatorId, m: Manifest, attestation: Option<Attestation>) {
        let at = self
            .offers
            .iter()
            .position(|o| o.manifest.same_snapshot(&m));
        let offer = match at {
            Some(i) => &mut self.offers[i],
            None => {
                self.offers.push(Offer {
                    manifest: m,
                    holders: Vec::new(),
                    attestations: Vec::new(),
                });
                self.offers.last_mut().expect("pushed")
            }
        };
        if !offer.holders.contains(&from) {
            offer.holders.push(from);
        }
        add_attestation(&mut offer.attestations, attestation);
    }
}

/// Adds `attestation` to `list` unless its signer's is there already (peers answer each
/// repeated manifest request).
fn add_attestation(list: &mut Vec<Attestation>, attestation: Option<Attestation>) {
    if let Some(a) = attestation.filter(|a| list.iter().all(|b| b.signer != a.signer)) {
        list.push(a);
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
        let mut joining = Joining {
            without: BTreeSet::new(),
            offers: Vec::new(),
            assembly: None,
            attestations: Vec::new(),
            next: None,
            later: BTreeMap::new(),
            seen: 0,
            manifest_bytes: 0,
            chunk_bytes: 0,
            cert_bytes: 0,
        };
        let mut attempts = 0;
        let (manifest, snapshot, manifest_ms, fetch) = loop {
            attempts += 1;
            joining.assembly = None;
            joining.attestations.clear();
            joining.offers.clear();
            joining.next = None;
            joining.without.clear();
            let Some(manifest) = self.ask_manifests(rx, &mut joining, peers).await else {
                return Ok(None);
            };
            let manifest_ms = started.elapsed().as_millis() as u64;
            let fetch = Instant::now();
            match self.fetch(rx, &mut joining).await {
                Ok(snapshot) => break (manifest, snapshot, manifest_ms, fetch),
                // The peers no longer keep it (they took newer ones): ask again.
                Err(why) if why == STALLED && attempts < ATTEMPTS => continue,
                Err(why) => return self.join_failed(manifest.height, &why).map(|()| None),
            }
        };
        let chunks_ms = fetch.elapsed().as_millis() as u64;
        let verify = Instant::now();
        let next = joining.next.take().expect("fetched with its certificate");
        let offer = (&manifest, joining.attestations.as_slice());
        let (trust, attested) = match self.install(&snapshot, &next, offer, genesis, chain_id) {
            Ok(done) => done,
            Err(why) => return self.join_failed(manifest.height, &why).map(|()| None),
        };
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

    /// The genesis stake that attested `offer` (signatures were checked on receipt, one
    /// per signer; the host applied nothing yet: its chain is the genesis one). Only steers
    /// the choice: the snapshot is checked against its own set once fetched.
    fn genesis_attested(&self, offer: &Offer) -> u64 {
        let genesis = self.host.chain().validators();
        let stakes = offer.attestations.iter();
        let stakes = stakes.filter_map(|a| genesis.stake_of(&a.signer));
        stakes.fold(0, u64::saturating_add)
    }

    /// Whether some offer is attested by more than 1/3 of the genesis stake.
    fn well_attested(&self, joining: &Joining) -> bool {
        let genesis = self.host.chain().validators();
        let stakes = joining.offers.iter().map(|o| self.genesis_attested(o));
        stakes.into_iter().any(|s| genesis.exceeds_one_third(s))
    }

    /// Starts fetching the offer with the most genesis stake attesting it (then the
    /// newest); returns its manifest.
    fn choose_offer(&self, joining: &mut Joining) -> Option<Manifest> {
        let best = (0..joining.offers.len()).max_by_key(|&i| {
            let offer = &joining.offers[i];
            (self.genesis_attested(offer), offer.manifest.height)
        })?;
        let offer = joining.offers.swap_remove(best);
        joining.offers.clear();
        joining.attestations = offer.attestations;
        let manifest = offer.manifest.clone();
        joining.assembly = Some((Assembly::new(offer.manifest), offer.holders));
        Some(manifest)
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

    /// A manifest's attestation if its signature checks.
    fn checked_attestation(&self, m: &Manifest) -> Option<Attestation> {
        let chain_id = self.host.chain().chain_id();
        m.attestation.filter(|a| a.signs(m, chain_id, &Ed25519))
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
                let attestation = self.checked_attestation(&m);
                match joining.assembly.as_mut() {
                    Some((a, holders)) if a.manifest.same_snapshot(&m) => {
                        if !holders.contains(&from) {
                            holders.push(from);
                        }
                        add_attestation(&mut joining.attestations, attestation);
                    }
                    Some(_) => {}
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
                return Err("timed out".into());
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
    /// the genesis set and its own chain state's set, checks that more than 1/3 of that
    /// set's stake attested its manifest (`offer`: the manifest and the attestations
    /// received), and starts the host and the block file after it. Returns how the
    /// certificate was trusted and the stake that attested the snapshot.
    fn install(
        &mut self,
        snapshot: &Snapshot,
        next: &CommitCertificate,
        (manifest, attestations): (&Manifest, &[Attestation]),
        genesis: &ChainState,
        chain_id: &[u8; 32],
    ) -> Result<(state_sync::Trust, u64), String> {
        let app = self.host.app_mut();
        let (execution, chain) = app.open_snapshot(snapshot, chain_id)?;
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
        Ok((trust, attested))
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
