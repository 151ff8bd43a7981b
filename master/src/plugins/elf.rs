//! Reads one named section of an ELF file without loading it: how the master
//! learns what a plugin library offers (its metadata section) before deciding
//! whether to map it. Only the headers and the section itself are read.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

/// Section header tables and name tables larger than this are not plausible
/// for a plugin and are not read.
const MAX_TABLE: u64 = 4 << 20;

/// The content of section `name` of `file`, if it has one of at most `max`
/// bytes. `Err` when the file is not a readable ELF file.
pub fn section(file: &mut File, name: &str, max: u64) -> io::Result<Option<Vec<u8>>> {
    let mut ident = [0u8; 64];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut ident[..52])?;
    if &ident[..4] != b"\x7fELF" {
        return Err(invalid("no ELF header"));
    }
    let wide = match ident[4] {
        1 => false,
        2 => true,
        _ => return Err(invalid("unknown ELF class")),
    };
    let reader = Reader {
        big_endian: match ident[5] {
            1 => false,
            2 => true,
            _ => return Err(invalid("unknown ELF byte order")),
        },
    };
    if wide {
        file.read_exact(&mut ident[52..64])?;
    }
    // Where the section headers are, how large each is, how many, and which
    // one holds the section names.
    let (table, entry, count, names_index) = if wide {
        (
            reader.u64(&ident[0x28..]),
            reader.u16(&ident[0x3a..]),
            reader.u16(&ident[0x3c..]),
            reader.u16(&ident[0x3e..]),
        )
    } else {
        (
            u64::from(reader.u32(&ident[0x20..])),
            reader.u16(&ident[0x2e..]),
            reader.u16(&ident[0x30..]),
            reader.u16(&ident[0x32..]),
        )
    };
    let minimum = if wide { 0x40 } else { 0x28 };
    if table == 0 || count == 0 || usize::from(entry) < minimum || names_index >= count {
        return Ok(None);
    }
    let headers = read_at(file, table, u64::from(entry) * u64::from(count), MAX_TABLE)?;
    let header = |index: u16| {
        let at = usize::from(index) * usize::from(entry);
        let h = &headers[at..at + usize::from(entry)];
        // (name offset, type, file offset, size)
        if wide {
            (
                reader.u32(h),
                reader.u32(&h[4..]),
                reader.u64(&h[0x18..]),
                reader.u64(&h[0x20..]),
            )
        } else {
            (
                reader.u32(h),
                reader.u32(&h[4..]),
                u64::from(reader.u32(&h[0x10..])),
                u64::from(reader.u32(&h[0x14..])),
            )
        }
    };
    let (_, _, names_offset, names_size) = header(names_index);
    let names = read_at(file, names_offset, names_size, MAX_TABLE)?;
    const NOBITS: u32 = 8;
    for index in 0..count {
        let (name_at, kind, offset, size) = header(index);
        let found = names
            .get(name_at as usize..)
            .and_then(|rest| rest.split(|&b| b == 0).next())
            .is_some_and(|n| n == name.as_bytes());
        if found && kind != NOBITS {
            return read_at(file, offset, size, max).map(Some);
        }
    }
    Ok(None)
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

fn read_at(file: &mut File, offset: u64, size: u64, max: u64) -> io::Result<Vec<u8>> {
    if size > max {
        return Err(invalid("an ELF table or section is implausibly large"));
    }
    let mut bytes = vec![0u8; size as usize];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

struct Reader {
    big_endian: bool,
}

impl Reader {
    fn u16(&self, b: &[u8]) -> u16 {
        let b = [b[0], b[1]];
        if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32(&self, b: &[u8]) -> u32 {
        let b = [b[0], b[1], b[2], b[3]];
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    fn u64(&self, b: &[u8]) -> u64 {
        let b = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
        if self.big_endian {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_section_of_this_test_binary_and_misses_an_absent_one() {
        let mut exe = File::open(std::env::current_exe().unwrap()).unwrap();
        let text = section(&mut exe, ".text", u64::MAX).unwrap();
        assert!(text.is_some_and(|t| !t.is_empty()));
        assert_eq!(
            section(&mut exe, ".no_such_section", 1 << 20).unwrap(),
            None
        );
    }

    #[test]
    fn a_file_that_is_not_elf_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.so");
        std::fs::write(&path, vec![b'x'; 100]).unwrap();
        assert!(section(&mut File::open(&path).unwrap(), ".text", 10).is_err());
        std::fs::write(&path, b"\x7fELF").unwrap();
        assert!(section(&mut File::open(&path).unwrap(), ".text", 10).is_err());
    }
}
