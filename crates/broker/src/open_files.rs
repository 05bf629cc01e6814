//! Open files bound how many partitions the broker can host: every segment of every partition
//! keeps its log file open (indexes are opened only to be written). Creating topics and
//! partitions checks the room left before it starts, so that an operation that cannot complete
//! is refused whole instead of failing half-way with partition directories left behind.

/// Files a new partition holds open: its one (active) segment's log file.
pub const FILES_PER_NEW_PARTITION: u64 = 1;

/// The open-file limit: soft and hard `RLIMIT_NOFILE` (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

fn to_limit(v: libc::rlim_t) -> Option<u64> {
    (v != libc::RLIM_INFINITY).then_some(v)
}

pub fn limit() -> std::io::Result<Limit> {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Limit { soft: to_limit(rl.rlim_cur), hard: to_limit(rl.rlim_max) })
}

/// Raises the soft open-file limit to the hard limit (what an unprivileged process may do) and
/// returns the limit before and after.
pub fn raise_to_hard_limit() -> std::io::Result<(Limit, Limit)> {
    let before = limit()?;
    if before.soft != before.hard {
        let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: as above; then setrlimit reads the struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            rl.rlim_cur = rl.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok((before, limit()?))
}

/// Files this process has open now.
pub fn in_use() -> std::io::Result<u64> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count() as u64)
}

/// Files kept free for what else needs them: connections, segment rolls, index writes, the
/// cleaner's temporary segments.
pub fn reserve(soft_limit: u64) -> u64 {
    (soft_limit / 10).max(256)
}

/// Room for how many more partitions, and how that was computed.
#[derive(Debug, Clone, Copy)]
pub struct Room {
    pub limit: u64,
    pub in_use: u64,
    pub reserve: u64,
    pub partitions: u64,
}

impl Room {
    pub fn new(limit: u64, in_use: u64) -> Room {
        let reserve = reserve(limit);
        let partitions = limit.saturating_sub(in_use).saturating_sub(reserve) / FILES_PER_NEW_PARTITION;
        Room { limit, in_use, reserve, partitions }
    }

    /// Refuses `partitions` new partitions if they do not fit.
    pub fn check(&self, partitions: u64) -> Result<(), String> {
        if partitions <= self.partitions {
            return Ok(());
        }
        Err(format!(
            "Creating {partitions} partitions needs {} open files, and this broker has room for {} more \
             partitions: open-file limit {}, {} files open, {} kept free for connections and segment files. \
             Raise the open-file limit (ulimit -n, LimitNOFILE) or create fewer partitions.",
            partitions * FILES_PER_NEW_PARTITION,
            self.partitions,
            self.limit,
            self.in_use,
            self.reserve
        ))
    }
}

/// The room left now; `None` if there is no limit (or it cannot be read: nothing to check then).
pub fn room() -> Option<Room> {
    Some(Room::new(limit().ok()?.soft?, in_use().ok()?))
}

/// Refuses to start creating `partitions` partitions that the open-file limit cannot hold.
pub fn check_room_for(partitions: u64) -> Result<(), String> {
    room().map_or(Ok(()), |room| room.check(partitions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_what_the_limit_leaves() {
        let room = Room::new(2000, 100);
        assert_eq!((room.reserve, room.partitions), (256, 1644));
        assert!(room.check(1644).is_ok());
        let refused = room.check(1645).unwrap_err();
        assert!(refused.contains("open-file limit 2000"), "{refused}");
        assert_eq!(Room::new(20_000, 50).partitions, 17_950);
        assert_eq!(Room::new(100, 50).partitions, 0);
    }

    #[test]
    fn this_process_has_a_limit_and_open_files() {
        let limit = limit().unwrap();
        assert!(limit.soft <= limit.hard || limit.hard.is_none());
        assert!(in_use().unwrap() > 0);
    }
}
