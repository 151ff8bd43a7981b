//! Loading plugin libraries.
//!
//! dlopen caches libraries by path and by inode, and overwriting a mapped library
//! crashes the process. So each `.so` is first copied into a private cache under a
//! name made of its content hash (BLAKE3: debug builds of plugins are large, and it
//! hashes them several times faster than SHA-256), and the copy is loaded. A library whose hash was
//! loaded before is reused as it is; a changed file gets a new hash, a new path and
//! so a fresh load. abi_stable never unloads a library: every distinct version
//! stays mapped for the life of the process.
//!
//! A library is not mapped until the configuration uses it: [`Loader::scan`]
//! reads each library's metadata section (written by the SDK's export macro)
//! from the file, which says what it offers. Only a library without one (built
//! before plugin ABI 1.1, or not a plugin at all) is loaded at scan time, to
//! ask it.
//!
//! Anything that is not a compatible plugin is refused with one [`LoadError`] line
//! that names the file and the reason; the long layout report abi_stable produces
//! goes to the debug log only.

mod elf;

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use abi_stable::library::{lib_header_from_path, LibraryError};
use abi_stable::std_types::RResult;
use buildmaster_plugin_api::boundary::{DialectBox, PluginModRef, ReporterBox};
use buildmaster_plugin_api::metadata::{self, Metadata};
use buildmaster_plugin_api::{ABI_MAJOR, ABI_MINOR, ABI_VERSION};

use crate::config::PluginDir;

/// A metadata section larger than this is not a plugin's.
const MAX_METADATA: u64 = 64 << 10;

/// Why a library was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadErrorKind {
    /// The file does not exist or cannot be read.
    MissingFile,
    /// The file is not a loadable shared library.
    NotALibrary,
    /// A shared library that exports no buildmaster root module.
    NotAPlugin,
    /// Built against an incompatible version of the plugin API.
    ApiVersion,
    /// The root module's layout differs from this master's.
    LayoutMismatch,
    /// Built with `panic = "abort"`, which would take the master down.
    PanicAborts,
    /// Its metadata section is unreadable or disagrees with its code.
    Metadata,
    /// The private cache could not be written.
    Cache,
}

/// One refused library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub path: PathBuf,
    pub kind: LoadErrorKind,
    /// One line, without the path.
    pub reason: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin {} refused: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for LoadError {}

/// A loaded plugin library.
pub struct Library {
    /// The file it was loaded from (not the cached copy).
    pub path: PathBuf,
    /// Hex BLAKE3 hash of its content.
    pub hash: String,
    pub name: String,
    pub version: String,
    /// The plugin ABI it was built for, `major.minor`.
    pub abi_version: String,
    /// The SDK version it was built with; `None` before ABI 1.1.
    pub sdk_version: Option<String>,
    pub dialects: Vec<String>,
    pub reporters: Vec<String>,
    module: PluginModRef,
}

impl fmt::Debug for Library {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Library")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("dialects", &self.dialects)
            .finish()
    }
}

impl Library {
    /// Constructs dialect `kind` under the instance `name`. A panic in the
    /// plugin's constructor comes back as an error.
    pub fn new_dialect(
        &self,
        kind: &str,
        name: &str,
        options: &serde_json::Value,
    ) -> Result<DialectBox, String> {
        let config = options.to_string();
        match (self.module.new_dialect())(kind.into(), name.into(), config.as_str().into()) {
            RResult::ROk(dialect) => Ok(dialect),
            RResult::RErr(e) => Err(e.message.to_string()),
        }
    }

    /// Constructs reporter `kind` under the instance `name`, as
    /// [`Library::new_dialect`] does.
    pub fn new_reporter(
        &self,
        kind: &str,
        name: &str,
        options: &serde_json::Value,
    ) -> Result<ReporterBox, String> {
        let config = options.to_string();
        match (self.module.new_reporter())(kind.into(), name.into(), config.as_str().into()) {
            RResult::ROk(reporter) => Ok(reporter),
            RResult::RErr(e) => Err(e.message.to_string()),
        }
    }
}

/// A library found in a plugin directory.
#[derive(Debug, Clone)]
pub enum Offer {
    /// Described by its metadata section; mapped only once it is used.
    Described { path: PathBuf, metadata: Metadata },
    /// Without a metadata section: loaded at scan time to learn what it offers.
    Loaded(Arc<Library>),
}

impl Offer {
    pub fn path(&self) -> &Path {
        match self {
            Offer::Described { path, .. } => path,
            Offer::Loaded(library) => &library.path,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Offer::Described { metadata, .. } => &metadata.name,
            Offer::Loaded(library) => &library.name,
        }
    }

    pub fn dialects(&self) -> &[String] {
        match self {
            Offer::Described { metadata, .. } => &metadata.dialects,
            Offer::Loaded(library) => &library.dialects,
        }
    }

    pub fn reporters(&self) -> &[String] {
        match self {
            Offer::Described { metadata, .. } => &metadata.reporters,
            Offer::Loaded(library) => &library.reporters,
        }
    }
}

/// Whether a library built for plugin ABI `version` may be loaded: the same
/// major version, and a minor version no newer than this master's (a newer
/// library may call what this master lacks).
fn check_abi(version: &str) -> Result<(), String> {
    let parsed = version
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?)));
    match parsed {
        Some((major, minor)) if major == ABI_MAJOR && minor <= ABI_MINOR => Ok(()),
        Some(_) => Err(format!(
            "built against plugin API {version}, this master speaks {ABI_VERSION}; rebuild it against buildmaster-plugin-api {ABI_MAJOR}.{ABI_MINOR} or older {ABI_MAJOR}.x"
        )),
        None => Err(format!("unreadable plugin API version '{version}'")),
    }
}

/// The private cache of plugin copies inside a basedir.
pub fn cache_dir(basedir: &Path) -> PathBuf {
    basedir.join("plugin-cache")
}

/// Loads plugin libraries through the content-hash cache, reusing libraries
/// already loaded. One per process; shared by every configuration generation.
pub struct Loader {
    cache_dir: PathBuf,
    loaded: Mutex<HashMap<String, Arc<Library>>>,
    /// Numbers the temporary names of copies being made.
    copies: std::sync::atomic::AtomicU64,
}

impl Loader {
    /// A loader whose private copies live in `cache_dir` (created when needed).
    pub fn new(cache_dir: PathBuf) -> Loader {
        Loader {
            cache_dir,
            loaded: Mutex::new(HashMap::new()),
            copies: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Describes every `*.so` file in `dirs` (in order; a missing directory is
    /// skipped; a directory with a list offers only the files it names).
    /// Returns the offers and the refusals.
    pub fn scan(&self, dirs: &[PluginDir]) -> (Vec<Offer>, Vec<LoadError>) {
        let mut libraries = Vec::new();
        let mut errors = Vec::new();
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(&dir.path) else {
                continue;
            };
            let offered = |path: &Path| match dir.only {
                Some(names) => path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| names.contains(&n)),
                None => path.extension().is_some_and(|e| e == "so"),
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| offered(p) && p.is_file())
                .collect();
            files.sort();
            for file in files {
                match self.describe(&file) {
                    Ok(offer) => libraries.push(offer),
                    Err(e) => errors.push(e),
                }
            }
        }
        (libraries, errors)
    }

    /// What the library at `path` offers, from its metadata section; a
    /// library without one is loaded to ask it.
    pub fn describe(&self, path: &Path) -> Result<Offer, LoadError> {
        let refuse = |kind, reason: String| LoadError {
            path: path.to_path_buf(),
            kind,
            reason,
        };
        let section = std::fs::File::open(path)
            .and_then(|mut file| elf::section(&mut file, metadata::SECTION, MAX_METADATA));
        match section {
            Ok(Some(bytes)) => {
                let metadata = Metadata::parse(&bytes)
                    .map_err(|reason| refuse(LoadErrorKind::Metadata, reason))?;
                check_abi(&metadata.abi_version)
                    .map_err(|reason| refuse(LoadErrorKind::ApiVersion, reason))?;
                Ok(Offer::Described {
                    path: path.to_path_buf(),
                    metadata,
                })
            }
            // `load` says precisely why a file is not a plugin.
            Ok(None) | Err(_) => self.load(path).map(Offer::Loaded),
        }
    }

    /// Loads one library file, or returns the loaded library of the same content.
    /// Files are read in chunks, never whole: plugin libraries can be tens of
    /// megabytes, and a heap that large would stay with the process.
    pub fn load(&self, path: &Path) -> Result<Arc<Library>, LoadError> {
        let refuse = |kind, reason: String| LoadError {
            path: path.to_path_buf(),
            kind,
            reason,
        };
        let unreadable = |e: std::io::Error| {
            let reason = if e.kind() == std::io::ErrorKind::NotFound {
                "no such file".to_string()
            } else {
                format!("cannot read: {e}")
            };
            refuse(LoadErrorKind::MissingFile, reason)
        };
        let mut file = std::fs::File::open(path).map_err(unreadable)?;
        let mut magic = [0u8; 4];
        if file.read_exact(&mut magic).is_err() || &magic != b"\x7fELF" {
            return Err(refuse(
                LoadErrorKind::NotALibrary,
                "not a shared library (no ELF header)".into(),
            ));
        }
        let hash = hash_file(path).map_err(unreadable)?;
        let mut loaded = self.loaded.lock().expect("loader lock");
        if let Some(library) = loaded.get(&hash) {
            return Ok(library.clone());
        }
        let (hash, copy) = self.cache_copy(path).map_err(|e| {
            refuse(
                LoadErrorKind::Cache,
                format!("cannot write the plugin cache: {e}"),
            )
        })?;
        if let Some(library) = loaded.get(&hash) {
            // The file changed while it was read; its new content is loaded already.
            return Ok(library.clone());
        }
        let library = Arc::new(
            open(path, &copy, hash.clone()).map_err(|(kind, reason)| refuse(kind, reason))?,
        );
        loaded.insert(hash, library.clone());
        Ok(library)
    }

    /// Copies `path` into the cache as `<hash>.so`, where the hash is that of the
    /// copy itself (so a file replaced meanwhile cannot give a copy a wrong
    /// name). The copy is made under a temporary name and renamed, so a reader
    /// never sees half a file. It is not synced: the cache can always be made again.
    fn cache_copy(&self, path: &Path) -> std::io::Result<(String, PathBuf)> {
        std::fs::create_dir_all(&self.cache_dir)?;
        let temp = self.cache_dir.join(format!(
            ".incoming.{}.{}.tmp",
            std::process::id(),
            self.copies
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::copy(path, &temp)?;
        let hash = hash_file(&temp)?;
        let target = self.cache_dir.join(format!("{hash}.so"));
        std::fs::rename(&temp, &target)?;
        Ok((hash, target))
    }
}

/// The hex BLAKE3 hash of a file's content, read in chunks.
fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// Opens the cached copy and checks it is a compatible plugin.
fn open(original: &Path, copy: &Path, hash: String) -> Result<Library, (LoadErrorKind, String)> {
    let header = lib_header_from_path(copy).map_err(|e| classify(original, e))?;
    let module = header
        .init_root_module::<PluginModRef>()
        .map_err(|e| classify(original, e))?;
    let abi_version = module.abi_version().to_string();
    check_abi(&abi_version).map_err(|reason| (LoadErrorKind::ApiVersion, reason))?;
    if !module.panic_unwinds() {
        return Err((
            LoadErrorKind::PanicAborts,
            "built with panic = \"abort\"; rebuild it with panic = \"unwind\"".into(),
        ));
    }
    // The section the file was chosen by must say what the code says.
    let extended = module.extended();
    if let Some(embedded) = extended.metadata() {
        let in_file = std::fs::File::open(copy)
            .and_then(|mut file| elf::section(&mut file, metadata::SECTION, MAX_METADATA))
            .ok()
            .flatten();
        if in_file.as_deref() != Some(embedded.as_slice()) {
            return Err((
                LoadErrorKind::Metadata,
                "its metadata section does not match its code".into(),
            ));
        }
    }
    let names = |kinds: abi_stable::std_types::RSlice<
        'static,
        abi_stable::std_types::RStr<'static>,
    >| { kinds.iter().map(|k| k.to_string()).collect() };
    Ok(Library {
        path: original.to_path_buf(),
        hash,
        name: module.plugin_name().to_string(),
        version: module.plugin_version().to_string(),
        abi_version,
        sdk_version: extended.sdk_version().map(|v| v.to_string()),
        dialects: names(module.dialects()),
        reporters: names(module.reporters()),
        module,
    })
}

/// Maps abi_stable's errors onto our one-line classes. The full report goes to
/// the debug log.
fn classify(path: &Path, error: LibraryError) -> (LoadErrorKind, String) {
    tracing::debug!(plugin = %path.display(), "load failure details: {error}");
    match error {
        LibraryError::OpenError { err, .. } => (
            LoadErrorKind::NotALibrary,
            format!("cannot be loaded: {}", first_line(&err.to_string())),
        ),
        LibraryError::GetSymbolError { .. } | LibraryError::InvalidAbiHeader(_) => (
            LoadErrorKind::NotAPlugin,
            "not a buildmaster plugin (it exports no buildmaster root module)".into(),
        ),
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => (
            LoadErrorKind::ApiVersion,
            format!(
                "built against plugin API {actual_version}, this master speaks {ABI_VERSION}; rebuild it against buildmaster-plugin-api {ABI_MAJOR}.x"
            ),
        ),
        LibraryError::ParseVersionError(e) => (
            LoadErrorKind::ApiVersion,
            format!("unreadable plugin API version: {}", first_line(&e.to_string())),
        ),
        LibraryError::AbiInstability(_) | LibraryError::InvalidCAbi { .. } => (
            LoadErrorKind::LayoutMismatch,
            format!(
                "its root module does not match plugin API {ABI_VERSION} (layout mismatch); rebuild it against this version"
            ),
        ),
        LibraryError::RootModule { err, .. } => (
            LoadErrorKind::NotAPlugin,
            format!("its root module failed: {}", first_line(&err.to_string())),
        ),
        LibraryError::Many(errors) => match errors.into_iter().next() {
            Some(first) => classify(path, first),
            None => (LoadErrorKind::NotAPlugin, "unknown load failure".into()),
        },
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(path: &Path) -> PluginDir {
        PluginDir {
            path: path.to_path_buf(),
            explicit: true,
            only: None,
        }
    }

    #[test]
    fn a_directory_with_a_list_offers_only_the_files_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let loader = Loader::new(dir.path().join("cache"));
        for name in ["current.so", "stale.so"] {
            std::fs::write(dir.path().join(name), "not a library").unwrap();
        }
        let (_, errors) = loader.scan(&[any(dir.path())]);
        assert_eq!(errors.len(), 2);
        let (_, errors) = loader.scan(&[PluginDir {
            only: Some(&["current.so"]),
            ..any(dir.path())
        }]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].path.ends_with("current.so"), "{}", errors[0]);
    }

    #[test]
    fn missing_and_non_library_files_are_refused_with_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let loader = Loader::new(dir.path().join("cache"));
        let err = loader.load(&dir.path().join("nope.so")).unwrap_err();
        assert_eq!(err.kind, LoadErrorKind::MissingFile);
        assert!(
            err.to_string().ends_with("nope.so refused: no such file"),
            "{err}"
        );
        std::fs::write(dir.path().join("text.so"), "hello").unwrap();
        let err = loader.load(&dir.path().join("text.so")).unwrap_err();
        assert_eq!(err.kind, LoadErrorKind::NotALibrary);
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn an_elf_file_that_is_not_a_library_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let loader = Loader::new(dir.path().join("cache"));
        // An executable is ELF but cannot be dlopened as a library.
        let exe = std::env::current_exe().unwrap();
        std::fs::copy(&exe, dir.path().join("exe.so")).unwrap();
        let (libraries, errors) = loader.scan(&[any(dir.path())]);
        assert!(libraries.is_empty());
        assert_eq!(errors.len(), 1);
        assert!(
            matches!(
                errors[0].kind,
                LoadErrorKind::NotALibrary | LoadErrorKind::NotAPlugin
            ),
            "{}",
            errors[0]
        );
        assert!(!errors[0].to_string().contains('\n'));
    }
}
