//! Kernel image helpers: turning a distribution's bzImage into the uncompressed ELF `vmlinux`
//! Firecracker boots.

/// Why a kernel image could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Not a bzImage (no `HdrS` setup header) and not an ELF file either.
    #[error("not a bzImage: {0}")]
    NotBzImage(&'static str),
    /// The payload uses a compression this helper does not decode.
    #[error("unsupported bzImage payload compression (magic {0:02x?}); only LZ4 is decoded")]
    UnsupportedCompression([u8; 4]),
    /// The LZ4 stream is corrupt.
    #[error("corrupt LZ4 payload: {0}")]
    Lz4(String),
    /// The decompressed payload is not an ELF image.
    #[error("decompressed payload is not an ELF image")]
    NotElf,
}

const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Returns the compressed payload of a bzImage: the setup header gives its offset and length
/// relative to the protected-mode code, which starts after `setup_sects + 1` sectors.
pub fn bzimage_payload(image: &[u8]) -> Result<&[u8], KernelError> {
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return Err(KernelError::NotBzImage("no HdrS signature at 0x202"));
    }
    let setup_sects = match image.get(0x1f1) {
        Some(0) => 4,
        Some(&n) => usize::from(n),
        None => return Err(KernelError::NotBzImage("truncated header")),
    };
    let pm_start = (setup_sects + 1) * 512;
    let offset = u32_at(image, 0x248).ok_or(KernelError::NotBzImage("truncated header"))? as usize;
    let length = u32_at(image, 0x24c).ok_or(KernelError::NotBzImage("truncated header"))? as usize;
    let start = pm_start + offset;
    image
        .get(start..start + length)
        .ok_or(KernelError::NotBzImage("payload lies outside the file"))
}

/// Decodes the LZ4 "legacy" frame format the kernel build uses: a magic, then blocks each
/// preceded by their compressed size; the kernel appends the decompressed size as 4 trailing
/// bytes, which ends the loop.
pub fn lz4_legacy_decompress(data: &[u8]) -> Result<Vec<u8>, KernelError> {
    if u32_at(data, 0) != Some(LZ4_LEGACY_MAGIC) {
        return Err(KernelError::Lz4("missing legacy frame magic".into()));
    }
    let mut out = Vec::new();
    let mut pos = 4;
    while let Some(size) = u32_at(data, pos) {
        pos += 4;
        if size == LZ4_LEGACY_MAGIC {
            continue; // concatenated frame
        }
        let Some(block) = data.get(pos..pos + size as usize) else {
            break; // trailing uncompressed-size field
        };
        let bytes = lz4_flex::block::decompress(block, LZ4_LEGACY_BLOCK)
            .map_err(|e| KernelError::Lz4(e.to_string()))?;
        out.extend_from_slice(&bytes);
        pos += size as usize;
    }
    Ok(out)
}

/// Returns an ELF `vmlinux` for `image`: the image itself when it already is ELF, else the
/// decompressed payload of a bzImage (LZ4 only).
pub fn extract_vmlinux(image: &[u8]) -> Result<Vec<u8>, KernelError> {
    if image.starts_with(b"\x7fELF") {
        return Ok(image.to_vec());
    }
    let payload = bzimage_payload(image)?;
    let magic = payload.get(..4).unwrap_or_default();
    let elf = if u32_at(magic, 0) == Some(LZ4_LEGACY_MAGIC) {
        lz4_legacy_decompress(payload)?
    } else {
        let mut m = [0u8; 4];
        m[..magic.len()].copy_from_slice(magic);
        return Err(KernelError::UnsupportedCompression(m));
    };
    if !elf.starts_with(b"\x7fELF") {
        return Err(KernelError::NotElf);
    }
    Ok(elf)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lz4_legacy_round_trip() {
        let elf: Vec<u8> = b"\x7fELF"
            .iter()
            .copied()
            .chain((0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()))
            .collect();
        let block = lz4_flex::block::compress(&elf);
        let mut payload = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        payload.extend_from_slice(&(block.len() as u32).to_le_bytes());
        payload.extend_from_slice(&block);
        payload.extend_from_slice(&(elf.len() as u32).to_le_bytes()); // size trailer
        assert_eq!(lz4_legacy_decompress(&payload).unwrap(), elf);

        // Wrap it into a minimal bzImage: setup_sects = 1, payload right after the setup.
        let mut image = vec![0u8; 1024];
        image[0x1f1] = 1;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(&payload);
        assert_eq!(extract_vmlinux(&image).unwrap(), elf);
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        assert!(matches!(
            extract_vmlinux(b"hello"),
            Err(KernelError::NotBzImage(_))
        ));
        let mut image = vec![0u8; 2048];
        image[0x1f1] = 1;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x24c..0x250].copy_from_slice(&8u32.to_le_bytes());
        image[1024..1028].copy_from_slice(&[0x1f, 0x8b, 8, 0]);
        assert!(matches!(
            extract_vmlinux(&image),
            Err(KernelError::UnsupportedCompression([0x1f, 0x8b, 8, 0]))
        ));
    }
}
