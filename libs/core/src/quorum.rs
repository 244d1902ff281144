//! Quorum arithmetic of a protection group: six members, two in each of three AZs.
//!
//! A record is durable when [`WRITE_QUORUM`] = 4 members hold it; recovery asks any
//! [`READ_QUORUM`] = 3. Because 4 + 3 > 6, every read quorum meets every write quorum, so recovery
//! always sees every durable record; because 4 > 6 / 2, two write quorums always overlap, so two
//! writers can never both make conflicting records durable. Losing one AZ leaves 4 members: writes
//! go on. Losing an AZ and one more leaves 3: reads (and recovery's fact finding) go on, writes do
//! not.

/// Members of a protection group.
pub const PG_MEMBERS: usize = 6;
/// Availability zones a protection group spans.
pub const AZ_COUNT: usize = 3;
/// Members per AZ.
pub const MEMBERS_PER_AZ: usize = PG_MEMBERS / AZ_COUNT;
/// Members that must hold a record for it to be durable.
pub const WRITE_QUORUM: usize = 4;
/// Members recovery must reach.
pub const READ_QUORUM: usize = 3;

const _: () = assert!(
    WRITE_QUORUM + READ_QUORUM > PG_MEMBERS,
    "read and write quorums must meet"
);
const _: () = assert!(2 * WRITE_QUORUM > PG_MEMBERS, "two write quorums must meet");
const _: () = assert!(
    PG_MEMBERS - MEMBERS_PER_AZ >= WRITE_QUORUM,
    "losing an AZ must keep writes"
);
const _: () = assert!(
    PG_MEMBERS - MEMBERS_PER_AZ > READ_QUORUM,
    "losing an AZ + 1 must keep reads"
);

/// The AZ of member `index` (0..6): members 0,1 are in AZ a, 2,3 in b, 4,5 in c.
pub fn az_of(member: usize) -> char {
    assert!(member < PG_MEMBERS, "member index out of range");
    (b'a' + (member / MEMBERS_PER_AZ) as u8) as char
}

/// A set of members, as a bit mask over the six member indexes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberSet(u8);

impl MemberSet {
    pub const ALL: MemberSet = MemberSet((1 << PG_MEMBERS) - 1);

    pub fn insert(&mut self, member: usize) {
        assert!(member < PG_MEMBERS, "member index out of range");
        self.0 |= 1 << member;
    }

    pub fn remove(&mut self, member: usize) {
        assert!(member < PG_MEMBERS, "member index out of range");
        self.0 &= !(1 << member);
    }

    pub fn contains(self, member: usize) -> bool {
        member < PG_MEMBERS && self.0 & (1 << member) != 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn is_write_quorum(self) -> bool {
        self.len() >= WRITE_QUORUM
    }

    pub fn is_read_quorum(self) -> bool {
        self.len() >= READ_QUORUM
    }
}

/// The highest value that at least `quorum` of `values` reach: with SCLs, the LSN up to which a
/// segment is held complete by a quorum.
pub fn quorum_value<T: Copy + Ord>(values: &[T], quorum: usize) -> Option<T> {
    if quorum == 0 || values.len() < quorum {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable_by(|a, b| b.cmp(a));
    Some(v[quorum - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up_except(down: &[usize]) -> MemberSet {
        let mut s = MemberSet::ALL;
        for &d in down {
            s.remove(d);
        }
        s
    }

    #[test]
    fn azs_hold_two_members_each() {
        let azs: String = (0..PG_MEMBERS).map(az_of).collect();
        assert_eq!(azs, "aabbcc");
    }

    #[test]
    fn any_single_member_down_keeps_reads_and_writes() {
        for m in 0..PG_MEMBERS {
            let s = up_except(&[m]);
            assert!(s.is_write_quorum() && s.is_read_quorum(), "member {m}");
        }
    }

    #[test]
    fn any_az_down_keeps_reads_and_writes() {
        for az in 0..AZ_COUNT {
            let s = up_except(&[2 * az, 2 * az + 1]);
            assert_eq!(s.len(), 4);
            assert!(s.is_write_quorum(), "AZ {az}");
            assert!(s.is_read_quorum(), "AZ {az}");
        }
    }

    #[test]
    fn every_az_plus_one_keeps_reads_but_not_writes() {
        for az in 0..AZ_COUNT {
            for extra in (0..PG_MEMBERS).filter(|m| m / 2 != az) {
                let s = up_except(&[2 * az, 2 * az + 1, extra]);
                assert!(!s.is_write_quorum(), "AZ {az} + member {extra}");
                assert!(s.is_read_quorum(), "AZ {az} + member {extra}");
            }
        }
    }

    #[test]
    fn two_azs_down_lose_reads_too() {
        let s = up_except(&[0, 1, 2, 3]);
        assert!(!s.is_read_quorum() && !s.is_write_quorum());
    }

    #[test]
    fn every_read_quorum_meets_every_write_quorum() {
        for w in 0u8..64 {
            for r in 0u8..64 {
                let (w, r) = (MemberSet(w), MemberSet(r));
                if w.is_write_quorum() && r.is_read_quorum() {
                    assert!(w.0 & r.0 != 0, "{w:?} and {r:?} are disjoint");
                }
            }
        }
    }

    #[test]
    fn quorum_value_is_the_kth_highest() {
        assert_eq!(quorum_value(&[5, 9, 1, 7, 3, 8], 4), Some(5));
        assert_eq!(quorum_value(&[5, 9, 1, 7, 3, 8], 3), Some(7));
        assert_eq!(quorum_value(&[5, 9, 1], 4), None);
        // Three acks do not make a record durable; the fourth does.
        assert_eq!(quorum_value(&[10, 10, 10, 0, 0, 0], WRITE_QUORUM), Some(0));
        assert_eq!(
            quorum_value(&[10, 10, 10, 10, 0, 0], WRITE_QUORUM),
            Some(10)
        );
    }
}
