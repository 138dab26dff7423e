//! Repairing damage as the [`RecoveryMode`] allows (`journal-format.md` section 9, step 5):
//! `AbsoluteConsistency` refuses any damage, `TolerateTornTail` cuts a torn tail and refuses
//! damage in the middle, `Salvage` also replaces damage in the middle by a gap record that names
//! the LSNs lost — never dropping them silently.
//!
//! A cut zeroes the region up to the last non-zero byte of the segment (rounded up to 8): every
//! frame in it goes, including frames after the damage that verify, because none of them
//! claims the damaged records durable (that is what made the region a torn tail) and durability
//! covers a prefix of the LSNs. Only the first torn tail is acted on: its cut covers the rest.
//!
//! Before any byte is overwritten it is saved to `forensics/` (if `keep_cut_bytes` is on),
//! durably; then the region is zeroed, the gap record written, the segment `fdatasync`ed and
//! examined again. A crash in the middle of a repair leaves either the old damage or a partial
//! repair, which is still a damaged region: the next open repairs it again (section 9.1).

use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::error::{DamageKind, Error, JournalError, Result};
use crate::fault::{FaultInjector, IoOp};
use crate::format::{FRAME_HEADER_BYTES, KIND_GAP, Lsn, Seed, frame_bytes, seal_frame};
use crate::journal::options::RecoveryMode;
use crate::journal::recovery::classify::Finding;
use crate::journal::recovery::examine::{Examined, SegmentBytes, examine};
use crate::journal::recovery::report::Cut;
use crate::journal::scan::nonzero_span;
use crate::segment::{FORENSICS_DIR, inject, open_segment_rw, sync_dir};

/// A repair to make to a segment file.
enum Repair {
    Zero {
        seg: usize,
        offset: usize,
        end: usize,
    },
    Gap {
        seg: usize,
        offset: usize,
        end: usize,
        lsn: Lsn,
        end_lsn: Lsn,
        prev_crc: u32,
    },
}

impl Repair {
    /// The segment (its index) and the byte range the repair overwrites.
    fn span(&self) -> (usize, usize, usize) {
        match *self {
            Repair::Zero { seg, offset, end }
            | Repair::Gap {
                seg, offset, end, ..
            } => (seg, offset, end),
        }
    }
}

/// What recovery will do: the repairs, and for each one the [`Cut`] it reports (in the same
/// order), plus the LSN ranges lost.
pub(crate) struct Plan {
    repairs: Vec<Repair>,
    /// One per repair, in the same order.
    pub cuts: Vec<Cut>,
    /// LSN ranges replaced by gap records.
    pub skipped: Vec<Range<Lsn>>,
}

/// Decides what to do with each finding under `mode`, or refuses the damage the mode does not
/// allow to repair (the error names the segment, the offset and the kind).
pub(crate) fn plan(segs: &[Examined], findings: &[Finding], mode: RecoveryMode) -> Result<Plan> {
    let mut repairs = Vec::new();
    let mut skipped = Vec::new();
    let mut cuts = Vec::new();
    let mut handled_tail = false;
    for f in findings {
        let seg = &segs[f.segment];
        if mode == RecoveryMode::AbsoluteConsistency
            || (mode == RecoveryMode::TolerateTornTail && !f.torn_tail)
        {
            return Err(f.to_error(&seg.path));
        }
        if f.torn_tail {
            if handled_tail {
                continue;
            }
            handled_tail = true;
            let bytes = seg.bytes.bytes();
            let end = nonzero_span(bytes, f.region.offset).map_or(f.region.end, |(_, e)| {
                ((e + 7) & !7).min(bytes.len()).max(f.region.end)
            });
            cuts.push(Cut {
                segment: seg.path.clone(),
                offset: f.region.offset as u64,
                len: (end - f.region.offset) as u64,
                kind: f.region.kind.clone(),
                torn_tail: true,
                records_dropped: seg.scan.tail.records - f.region.before.records,
                saved_to: None,
            });
            repairs.push(Repair::Zero {
                seg: f.segment,
                offset: f.region.offset,
                end,
            });
        } else {
            // Salvage of damage in the middle.
            let r = &f.region;
            // After a region with nothing valid behind it in its segment, everything is zero:
            // a gap record may run past the region's end if the region is too short for one.
            let end = if r.resume_lsn.is_none() {
                r.end
                    .max(r.offset + frame_bytes(8))
                    .min(seg.header.segment_bytes as usize)
            } else {
                r.end
            };
            if f.lost.is_empty() && r.resume_lsn.is_none() {
                repairs.push(Repair::Zero {
                    seg: f.segment,
                    offset: r.offset,
                    end: r.end,
                });
            } else {
                if end - r.offset < frame_bytes(8) {
                    return Err(Error::corrupt(
                        &seg.path,
                        r.offset as u64,
                        DamageKind::Unsalvageable {
                            len: (end - r.offset) as u64,
                        },
                    ));
                }
                repairs.push(Repair::Gap {
                    seg: f.segment,
                    offset: r.offset,
                    end,
                    lsn: f.lost.start,
                    end_lsn: f.lost.end,
                    prev_crc: r.before.last_crc,
                });
                if !f.lost.is_empty() {
                    skipped.push(f.lost.clone());
                }
            }
            cuts.push(Cut {
                segment: seg.path.clone(),
                offset: r.offset as u64,
                len: (end - r.offset) as u64,
                kind: r.kind.clone(),
                torn_tail: false,
                records_dropped: 0,
                saved_to: None,
            });
        }
    }
    Ok(Plan {
        repairs,
        cuts,
        skipped,
    })
}

/// Carries out `plan`: keeps the bytes about to be overwritten (with `keep_cut_bytes`, noting
/// where in each cut), repairs, and examines the repaired segments again, which must now be
/// clean. `segs[i]` is replaced by its new examination.
pub(crate) fn apply(
    dir: &Path,
    segs: &mut [Examined],
    plan: &mut Plan,
    journal_id: Uuid,
    keep_cut_bytes: bool,
    faults: Option<&dyn FaultInjector>,
) -> Result<()> {
    if plan.repairs.is_empty() {
        return Ok(());
    }
    // Keep the bytes we are about to overwrite, then repair.
    for (cut, repair) in plan.cuts.iter_mut().zip(&plan.repairs) {
        let (seg, offset, end) = repair.span();
        if keep_cut_bytes {
            let s = &segs[seg];
            cut.saved_to = Some(save_cut(
                dir,
                s.seq,
                offset,
                &s.bytes.bytes()[offset..end],
                faults,
            )?);
        }
    }
    let touched: Vec<usize> = {
        let mut v: Vec<usize> = plan.repairs.iter().map(|r| r.span().0).collect();
        v.dedup();
        v
    };
    // Drop the read maps of the segments we write, then write with pwrite.
    for &i in &touched {
        segs[i].bytes = SegmentBytes::Owned(Vec::new());
    }
    for repair in &plan.repairs {
        apply_repair(segs, repair, faults)?;
    }
    for &i in &touched {
        let s = &segs[i];
        let again = examine(s.seq, &s.path, Some(journal_id), true, false)?;
        if let Some(r) = again.scan.regions.first() {
            return Err(Error::corrupt(&s.path, r.offset as u64, r.kind.clone()));
        }
        segs[i] = again;
    }
    Ok(())
}

/// Copies `bytes` to `forensics/<seq>-<offset>-<ms>.cut`, durably. The directory is opened
/// without following a link planted in its place, and the file is created new (`O_EXCL`,
/// never through a link): recovery, often run as root, writes only where it means to.
fn save_cut(
    dir: &Path,
    seq: u64,
    offset: usize,
    bytes: &[u8],
    faults: Option<&dyn FaultInjector>,
) -> Result<PathBuf> {
    use rustix::fs::{Mode, OFlags};
    let fdir = dir.join(FORENSICS_DIR);
    match fs::create_dir(&fdir) {
        Ok(()) => sync_dir(dir, faults)?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create forensics directory", &fdir, e)),
    }
    let unsafe_dir = |reason: &str| {
        Error::Journal(JournalError::UnsafeFile {
            path: fdir.clone(),
            reason: reason.into(),
        })
    };
    let dfd = rustix::fs::open(
        &fdir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP => unsafe_dir("is a symbolic link"),
        rustix::io::Errno::NOTDIR => unsafe_dir("is not a directory"),
        e => Error::io("open forensics directory", &fdir, e.into()),
    })?;
    let stamp = crate::journal::ack::now_ms();
    let mut attempt = 0u32;
    let (path, file) = loop {
        let name = match attempt {
            0 => format!("{seq:016}-{offset:010}-{stamp}.cut"),
            n => format!("{seq:016}-{offset:010}-{stamp}-{n}.cut"),
        };
        let path = fdir.join(&name);
        match rustix::fs::openat(
            &dfd,
            name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => break (path, File::from(fd)),
            Err(rustix::io::Errno::EXIST) if attempt < 100 => attempt += 1,
            Err(e) => return Err(Error::io("create side file", &path, e.into())),
        }
    };
    file.write_all_at(bytes, 0)
        .map_err(|e| Error::io("write side file", &path, e))?;
    file.sync_all()
        .map_err(|e| Error::io("fsync side file", &path, e))?;
    inject(faults, IoOp::SyncDir, &fdir)
        .and_then(|()| File::from(dfd).sync_all())
        .map_err(|e| Error::io("fsync directory", &fdir, e))?;
    Ok(path)
}

/// Zeroes the repair's range, writes its gap record (if it is one), and `fdatasync`s the
/// segment.
fn apply_repair(
    segs: &[Examined],
    repair: &Repair,
    faults: Option<&dyn FaultInjector>,
) -> Result<()> {
    let (seg, offset, end) = repair.span();
    let s = &segs[seg];
    let file = open_segment_rw(&s.path)?;
    let zeros = vec![0u8; (end - offset).min(1 << 20)];
    let mut at = offset;
    while at < end {
        let n = (end - at).min(zeros.len());
        file.write_all_at(&zeros[..n], at as u64)
            .map_err(|e| Error::io("zero damaged bytes", &s.path, e))?;
        at += n;
    }
    if let Repair::Gap {
        lsn,
        end_lsn,
        prev_crc,
        ..
    } = *repair
    {
        let mut payload = vec![0u8; end - offset - FRAME_HEADER_BYTES];
        payload[..8].copy_from_slice(&end_lsn.to_le_bytes());
        debug_assert_eq!(frame_bytes(payload.len()), end - offset);
        let seed = Seed::new(s.header.journal_id, s.seq);
        let header = seal_frame(seed, lsn, 0, prev_crc, KIND_GAP, &payload);
        file.write_all_at(&header, offset as u64)
            .and_then(|()| file.write_all_at(&payload, (offset + FRAME_HEADER_BYTES) as u64))
            .map_err(|e| Error::io("write gap record", &s.path, e))?;
    }
    inject(faults, IoOp::SyncData, &s.path)
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::io("fsync repaired segment", &s.path, e))
}
