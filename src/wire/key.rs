//! The pre-shared wire key: a file the user creates (`openssl rand -hex 32 > rig.key; chmod 600 rig.key`) and
//! names in the board profile (`vehicle.key_file`). None ships in the repository.

use std::path::Path;

use crate::error::bad_input;

/// Shortest key accepted, bytes (HMAC-SHA256's block-size guidance: at least the hash length).
pub const MIN_KEY_BYTES: usize = 32;

/// A key read from its file. Debug never prints it.
#[derive(Clone)]
pub struct WireKey(Vec<u8>);

impl std::fmt::Debug for WireKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WireKey({} bytes)", self.0.len())
    }
}

impl WireKey {
    /// A key from raw bytes (tests, the rig side's own reading).
    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<WireKey> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(bad_input(format!("wire key: {} bytes, need at least {MIN_KEY_BYTES}", bytes.len())));
        }
        Ok(WireKey(bytes.to_vec()))
    }

    /// Read a key file: hex text (64+ hex digits, whitespace ignored). Refused when others may read it, like ssh
    /// refuses a private key with loose permissions. Every problem is one line, exit 2.
    pub fn load(path: &Path) -> anyhow::Result<WireKey> {
        let shown = path.display();
        let meta = std::fs::metadata(path).map_err(|e| bad_input(format!("wire key {shown}: {e}")))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(bad_input(format!(
                    "wire key {shown}: readable by others (mode {mode:o}); chmod 600 {shown}"
                )));
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad_input(format!("wire key {shown}: {e}")))?;
        let hex: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = hex::decode(&hex).map_err(|e| {
            bad_input(format!("wire key {shown}: not hex ({e}); create one with: openssl rand -hex 32 > {shown}"))
        })?;
        WireKey::from_bytes(&bytes).map_err(|e| bad_input(format!("{shown}: {e:#}")))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, format!("{}\n", "ab".repeat(32))).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(WireKey::load(&p).unwrap().bytes(), &[0xab; 32]);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(format!("{:#}", WireKey::load(&p).unwrap_err()).contains("chmod 600"));
        std::fs::write(&p, "abcd").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(format!("{:#}", WireKey::load(&p).unwrap_err()).contains("need at least 32"));
        std::fs::write(&p, "zz".repeat(32)).unwrap();
        assert!(format!("{:#}", WireKey::load(&p).unwrap_err()).contains("not hex"));
        assert!(WireKey::load(&dir.path().join("missing")).is_err());
    }
}
