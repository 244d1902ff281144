//! A simulated safekeeper: the service's acceptor state machine and a driver that executes its
//! actions on an in-memory disk (one log per segment it holds, as the service keeps one file per
//! segment), and answers reads as the service's `Tenant::read_log` does.

use borealis_core::history::EpochStart;
use borealis_core::redo::RedoRecord;
use borealis_core::{Lsn, SegmentId};
use borealis_quorum::acceptor::{
    Acceptor, Action, AdoptOutcome, Control, Link, PlantedBug, Refusal, Source, TrimPoint,
};
use borealis_quorum::follower::HeldSegment;
use safekeeper::gossip::LocalTenant;
use safekeeper::rebuild::Rebuild;
use std::collections::{BTreeMap, BTreeSet};

/// A member crashed while executing an input's actions.
pub(super) struct Crashed;

/// A safekeeper: the service's acceptor state machine ([`Acceptor`]), and a driver that
/// executes its actions on an in-memory disk that loses what was not fsynced in a crash. The
/// service's driver is `safekeeper/src/tenant/mod.rs`: the same actions, on files.
pub(super) struct Member {
    planted: Option<PlantedBug>,
    pub(super) up: bool,
    pub(super) partitioned: bool,
    /// Durable: the control state, and the records fsynced, per segment.
    control: Control,
    pub(super) durable: BTreeMap<SegmentId, BTreeMap<Lsn, RedoRecord>>,
    /// Written, not yet fsynced: lost on a crash.
    pub(super) unsynced: Vec<(SegmentId, RedoRecord)>,
    pub(super) acceptor: Acceptor,
    /// Set while the member rebuilds after its disk was replaced: it refuses `GetState` (the
    /// service's `Store::rebuilding`); durable, like the service's marker file.
    pub(super) rebuild: Option<Rebuild>,
}

/// What a `ReadLog` gets from a member, decided in the order of the service's
/// `Tenant::read_log`: epoch checks, then the trim point, then the records.
pub(super) enum ReadAnswer {
    /// `Fenced`: the member's epoch is not the one asked for, or older than the minimum.
    Fenced,
    /// `LogTrimmed`: the read starts below the member's trim point.
    Trimmed { base: Lsn, last_cpl: Lsn },
    /// `Records`: what the member holds in `(after, min(upto, scl)]`, perhaps cut short.
    Records {
        records: Vec<RedoRecord>,
        scl: Lsn,
        known_vdl: Lsn,
    },
}

/// Why a trim or an adopted trim point did not happen.
pub(super) enum TrimFailed {
    /// The member crashed between two of its actions.
    Crashed,
    /// The acceptor refused it.
    Refused(String),
}

fn link(r: &RedoRecord) -> Link {
    Link {
        prev_lsn_segment: r.prev_lsn_segment,
        is_cpl: r.is_cpl,
    }
}

impl Member {
    pub(super) fn new(planted: Option<PlantedBug>) -> Self {
        let mut m = Self {
            planted,
            up: true,
            partitioned: false,
            control: Control::default(),
            durable: BTreeMap::new(),
            unsynced: Vec::new(),
            acceptor: Acceptor::default(),
            rebuild: None,
        };
        m.restart();
        m
    }

    pub(super) fn reachable(&self) -> bool {
        self.up && !self.partitioned
    }

    /// Whether it answers `GetState`: reachable, and not rebuilding.
    pub(super) fn testifies(&self) -> bool {
        self.reachable() && self.rebuild.is_none()
    }

    /// The SCL of `segment` this member vouches for (what it acks and reports).
    pub(super) fn scl(&self, segment: SegmentId) -> Lsn {
        self.acceptor
            .published()
            .segments
            .get(&segment)
            .map_or(Lsn::INVALID, |c| c.scl)
    }

    /// Each segment this member holds, with its SCL (published): what its `HelloOk` says.
    pub(super) fn scls(&self) -> Vec<(SegmentId, Lsn)> {
        self.acceptor
            .published()
            .segments
            .iter()
            .map(|(s, c)| (*s, c.scl))
            .collect()
    }

    /// The segments this member holds (published).
    pub(super) fn segments(&self) -> Vec<SegmentId> {
        self.acceptor.published().segments.keys().copied().collect()
    }

    /// The durable record of `segment` at `lsn`.
    pub(super) fn record(&self, segment: SegmentId, lsn: Lsn) -> Option<&RedoRecord> {
        self.durable.get(&segment)?.get(&lsn)
    }

    /// The durable records of `segment` in `range`.
    pub(super) fn records(
        &self,
        segment: SegmentId,
        range: std::ops::RangeInclusive<Lsn>,
    ) -> impl Iterator<Item = (&Lsn, &RedoRecord)> {
        self.durable
            .get(&segment)
            .into_iter()
            .flat_map(move |log| log.range(range.clone()))
    }

    pub(super) fn epoch(&self) -> u64 {
        self.acceptor.published().epoch
    }

    /// The epoch it acks in and answers writers in: installed, or promised to a `Fence`.
    pub(super) fn ack_epoch(&self) -> u64 {
        self.acceptor.published().ack_epoch()
    }

    pub(super) fn history(&self) -> &[EpochStart] {
        &self.acceptor.published().history
    }

    /// Where `segment`'s log was trimmed (`INVALID`: never): every record at or below it is in
    /// the segment's checkpoint, not here.
    pub(super) fn base(&self, segment: SegmentId) -> Lsn {
        self.trim_point(segment).base
    }

    fn trim_point(&self, segment: SegmentId) -> TrimPoint {
        self.acceptor
            .judge()
            .segment(segment)
            .map_or(TrimPoint::default(), |c| c.trim_point())
    }

    /// What `GetState` says of `segment` (`None`: nothing).
    pub(super) fn held(&self, segment: SegmentId) -> Option<HeldSegment> {
        self.acceptor
            .published()
            .segments
            .get(&segment)
            .map(|c| HeldSegment {
                scl: c.scl,
                end_lsn: c.end_lsn,
            })
    }

    /// What gossip's planning knows of this member (the service's `Store::local_view`).
    pub(super) fn local_view(&self) -> LocalTenant {
        let p = self.acceptor.published();
        LocalTenant {
            epoch: p.epoch,
            scl: p.segments.iter().map(|(s, c)| (*s, c.scl)).collect(),
        }
    }

    pub(super) fn crash(&mut self) {
        self.up = false;
        self.unsynced.clear();
    }

    /// Its disk is replaced: it goes down (its connections break), everything durable is gone,
    /// and its next restart starts it empty (drill 7), rebuilding (`safekeeper::rebuild`) unless
    /// `rebuilds` is false (the hole it closes).
    pub(super) fn wipe(&mut self, rebuilds: bool) {
        self.crash();
        self.control = Control::default();
        self.durable.clear();
        self.rebuild = rebuilds.then(Rebuild::new);
    }

    /// Rebuilds the acceptor from durable state, as the service's `Tenant::open` does.
    pub(super) fn restart(&mut self) {
        self.unsynced.clear();
        let (mut acceptor, finish) = Acceptor::open(self.control.clone());
        if let Some(bug) = self.planted {
            acceptor.plant(bug);
        }
        self.acceptor = acceptor;
        let _ = self.execute(finish, &[], None);
        let records: Vec<(SegmentId, Lsn, Link)> = self
            .durable
            .iter()
            .flat_map(|(s, log)| log.values().map(move |r| (*s, r.lsn, link(r))))
            .collect();
        for (segment, lsn, l) in records {
            self.acceptor.load(segment, lsn, l);
        }
        let publish = self.acceptor.opened();
        let _ = self.execute(publish, &[], None);
        self.up = true;
    }

    /// The driver: executes `actions` in order on the in-memory disk. `input` holds the records
    /// a `Write` names. With `crash_after: Some(n)`, the member crashes after `n` actions.
    /// Returns whether anything was published (acks are due).
    fn execute(
        &mut self,
        actions: Vec<Action>,
        input: &[RedoRecord],
        crash_after: Option<usize>,
    ) -> Result<bool, Crashed> {
        let mut published = false;
        for (i, action) in actions.into_iter().enumerate() {
            if crash_after == Some(i) {
                self.crash();
                return Err(Crashed);
            }
            match action {
                Action::StoreControl(c) => self.control = c,
                Action::Truncate { above } => {
                    for log in self.durable.values_mut() {
                        log.retain(|lsn, _| *lsn <= above);
                    }
                    self.unsynced.retain(|(_, r)| r.lsn <= above);
                }
                Action::DropThrough { segment, base } => {
                    if let Some(log) = self.durable.get_mut(&segment) {
                        log.retain(|lsn, _| *lsn > base);
                    }
                    self.unsynced.retain(|(s, r)| *s != segment || r.lsn > base);
                }
                Action::Write { segment, records } => {
                    self.unsynced
                        .extend(records.into_iter().map(|i| (segment, input[i].clone())));
                }
                Action::Publish { .. } => published = true,
            }
        }
        Ok(published)
    }

    /// The service's log writer commits its group: fsync, then the acceptor publishes. Returns
    /// whether anything was published (acks are due).
    pub(super) fn sync(&mut self) -> bool {
        for (segment, r) in std::mem::take(&mut self.unsynced) {
            self.durable.entry(segment).or_default().insert(r.lsn, r);
        }
        let segments: BTreeSet<SegmentId> =
            self.acceptor.judge().segments().keys().copied().collect();
        let actions = self.acceptor.synced(&segments);
        self.execute(actions, &[], None).unwrap_or(false)
    }

    /// Hello from a writer (or a newer epoch learnt from a peer by gossip, which the service
    /// applies as that writer's Hello): fence, or align the log to the writer's history and
    /// install its epoch durably before answering. `Err(None)`: the member crashed on the way.
    pub(super) fn hello(
        &mut self,
        history: &[EpochStart],
        crash_after: Option<usize>,
    ) -> Result<(), Option<u64>> {
        let last = *history
            .last()
            .expect("a writer's history ends with its own epoch");
        if self.acceptor.has_unsynced() {
            self.sync();
        }
        match self.acceptor.hello(last.epoch, last.start, history) {
            Ok(actions) => self
                .execute(actions, &[], crash_after)
                .map(|_| ())
                .map_err(|Crashed| None),
            Err(Refusal::Fenced { ours, .. }) => Err(Some(ours)),
            // The same epoch with another history: a recovery attempt that failed (it reached
            // fewer than a write quorum, this member among them, then this member crashed or
            // went away) left the epoch here, and a later recovery that did not hear from this
            // member chose the same number. The writer is as good as fenced: it fails and the
            // next recovery takes a higher epoch (the service's member task does the same).
            Err(Refusal::Invalid { reason }) if reason.contains("was started with the history") => {
                Err(Some(self.epoch()))
            }
            Err(r) => panic!("writer sent an inconsistent Hello: {r:?}"),
        }
    }

    /// A recovery's `Fence` (RFC 0014 §2), a barrier in the service's log writer: the group
    /// before it is committed, then the promise is stored and published. `Err(None)`: the
    /// member crashed on the way; `Err(Some(epoch))`: refused, `epoch` is installed or promised.
    pub(super) fn fence(
        &mut self,
        epoch: u64,
        crash_after: Option<usize>,
    ) -> Result<(), Option<u64>> {
        if self.acceptor.has_unsynced() {
            self.sync();
        }
        match self.acceptor.fence(epoch) {
            Ok(actions) => self
                .execute(actions, &[], crash_after)
                .map(|_| ())
                .map_err(|Crashed| None),
            Err(Refusal::Fenced { ours, .. }) => Err(Some(ours)),
            Err(r) => panic!("a recovery sent an inconsistent Fence: {r:?}"),
        }
    }

    /// Records of `segment` arrive from a writer (`Source::Writer`) or a peer: judged by the
    /// acceptor, written (not synced). Returns whether anything was published, or the epoch that
    /// refused.
    pub(super) fn append(
        &mut self,
        segment: SegmentId,
        source: Source,
        records: &[RedoRecord],
    ) -> Result<bool, u64> {
        let metas: Vec<(Lsn, Link, u64)> = records
            .iter()
            .map(|r| (r.lsn, link(r), r.encoded_len() as u64))
            .collect();
        match self
            .acceptor
            .append(segment, source, &metas, |_| Ok::<(), ()>(()))
        {
            Ok(Ok((_, actions))) => Ok(self.execute(actions, records, None).unwrap_or(false)),
            Ok(Err(())) => unreachable!("the simulator admits every append"),
            Err(Refusal::Fenced { ours, .. } | Refusal::HelloFirst { ours, .. }) => Err(ours),
            Err(r) => panic!("an append was refused as {r:?}"),
        }
    }

    /// A peer's records fetched by gossip in our `epoch`: written, then the group commit makes
    /// them durable before the fetch goes on (the service's `LogWriter::repair` answers after
    /// its group's fsync). Returns whether anything was published (acks are due).
    pub(super) fn repair(
        &mut self,
        segment: SegmentId,
        epoch: u64,
        known_vdl: Lsn,
        records: &[RedoRecord],
    ) -> Result<bool, String> {
        let published = self
            .append(segment, Source::Peer { epoch, known_vdl }, records)
            .map_err(|ours| format!("refused by epoch {ours}"))?;
        Ok(self.sync() | published)
    }

    /// `Trim { segment, epoch, upto }` from a pageserver that checkpointed the segment up to
    /// `upto`: a barrier (the group is committed first), then the acceptor's actions. Returns the
    /// trim point after and the records dropped, and whether anything was published.
    pub(super) fn trim(
        &mut self,
        segment: SegmentId,
        epoch: u64,
        upto: Lsn,
        crash_after: Option<usize>,
    ) -> Result<(Lsn, usize, bool), TrimFailed> {
        let synced = self.acceptor.has_unsynced() && self.sync();
        match self.acceptor.trim(segment, epoch, upto) {
            Ok((base, dropped, actions)) => {
                let published = self
                    .execute(actions, &[], crash_after)
                    .map_err(|Crashed| TrimFailed::Crashed)?;
                Ok((base, dropped, synced | published))
            }
            Err(r) => Err(TrimFailed::Refused(format!("{r:?}"))),
        }
    }

    /// A peer's trim point learnt from its refusal of a gossip read in `epoch` (the service's
    /// `Tenant::adopt_trim`): a barrier, then the acceptor's actions. Returns the outcome and
    /// whether anything was published.
    pub(super) fn adopt_trim(
        &mut self,
        segment: SegmentId,
        epoch: u64,
        peer_scl: Lsn,
        point: TrimPoint,
        crash_after: Option<usize>,
    ) -> Result<(AdoptOutcome, bool), TrimFailed> {
        let synced = self.acceptor.has_unsynced() && self.sync();
        match self.acceptor.adopt_trim(segment, epoch, peer_scl, point) {
            Ok((outcome, actions)) => {
                let published = self
                    .execute(actions, &[], crash_after)
                    .map_err(|Crashed| TrimFailed::Crashed)?;
                Ok((outcome, synced | published))
            }
            Err(Refusal::Invalid { reason }) => Err(TrimFailed::Refused(reason)),
            Err(r) => Err(TrimFailed::Refused(format!("{r:?}"))),
        }
    }

    /// `ReadLsns { segment, after, upto, max_entries }` as the service's `Tenant::read_lsns`
    /// answers it: from the acceptor's chain, cut at the published SCL; the headers of the
    /// records in `(after, upto]` and the record at or below `after` the first links to, or the
    /// trim point when `after` lies below it (`LogTrimmed`).
    pub(super) fn read_lsns(
        &self,
        segment: SegmentId,
        after: Lsn,
        upto: Lsn,
        max: usize,
    ) -> Result<(Lsn, Vec<(Lsn, Link)>), TrimPoint> {
        let scl = self.scl(segment);
        let Some(chain) = self.acceptor.judge().segment(segment) else {
            return Ok((Lsn::INVALID, Vec::new()));
        };
        chain
            .index(after, upto.min(scl), max)
            .ok_or(chain.trim_point())
    }

    /// `ReadLog { segment, epoch: exact, min_epoch, after, upto }`, answered as the service's
    /// `Tenant::read_log` answers it: from the segment file (what was written, synced or not)
    /// up to the published SCL, at most `max_records` records (`max_bytes`), at least one.
    pub(super) fn read_log(
        &self,
        segment: SegmentId,
        exact: Option<u64>,
        min_epoch: u64,
        (after, upto): (Lsn, Lsn),
        max_records: usize,
    ) -> ReadAnswer {
        let ours = self.acceptor.judge().epoch();
        if exact.is_some_and(|e| e != ours) || ours < min_epoch {
            return ReadAnswer::Fenced;
        }
        let published = self.acceptor.published();
        let scl = self.scl(segment);
        let known_vdl = published.known_vdl;
        let trim = self.trim_point(segment);
        if after < trim.base && after < upto {
            return ReadAnswer::Trimmed {
                base: trim.base,
                last_cpl: trim.last_cpl,
            };
        }
        let limit = upto.min(scl);
        let mut file: BTreeMap<Lsn, &RedoRecord> = BTreeMap::new();
        if after < limit {
            let range = Lsn(after.0 + 1)..=limit;
            file.extend(self.records(segment, range.clone()).map(|(l, r)| (*l, r)));
            file.extend(
                self.unsynced
                    .iter()
                    .filter(|(s, r)| *s == segment && range.contains(&r.lsn))
                    .map(|(_, r)| (r.lsn, r)),
            );
        }
        ReadAnswer::Records {
            records: file
                .into_values()
                .take(max_records.max(1))
                .cloned()
                .collect(),
            scl,
            known_vdl,
        }
    }
}
