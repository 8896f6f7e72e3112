//! Safetensors files: named `f32`/`i32` tensors plus string metadata, read with every
//! problem reported at once and written atomically.
//!
//! Writing goes to a temporary file beside the target, which is flushed to disk
//! (`fsync`) and then renamed over it: a process killed at any moment leaves either the
//! old file or the new one, never a torn one. Reading never panics on bad bytes: a
//! truncated or corrupt file is an `Err` saying so, and [`TensorFile::take`] checks a
//! whole expected set of names and shapes, listing every missing, unexpected and
//! wrong-shaped tensor in one error.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result, bail};

/// A file's contents: tensors by name, and its metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorFile {
    pub reals: BTreeMap<String, ArrayD<f32>>,
    pub ints: BTreeMap<String, ArrayD<i32>>,
    pub metadata: BTreeMap<String, String>,
}

impl TensorFile {
    /// Reads `path`; any I/O or format problem is an `Err` naming the file.
    pub fn read(path: impl AsRef<Path>) -> Result<TensorFile> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
        TensorFile::from_bytes(&bytes).map_err(|e| Error::new(format!("{}: {e}", path.display())))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<TensorFile> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::new(format!("not a valid safetensors file ({e})")))?;
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::new(format!("not a valid safetensors file ({e})")))?;
        let mut out = TensorFile::default();
        if let Some(m) = meta.metadata() {
            out.metadata = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        let mut problems = Vec::new();
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let words = view.data().chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
            match view.dtype() {
                Dtype::F32 => {
                    let v = words.map(f32::from_le_bytes).collect();
                    out.reals.insert(
                        name,
                        ArrayD::from_shape_vec(shape, v).map_err(|e| Error::new(e.to_string()))?,
                    );
                }
                Dtype::I32 => {
                    let v = words.map(i32::from_le_bytes).collect();
                    out.ints.insert(
                        name,
                        ArrayD::from_shape_vec(shape, v).map_err(|e| Error::new(e.to_string()))?,
                    );
                }
                other => problems.push(format!("`{name}` is {other:?}; expected F32 or I32")),
            }
        }
        if !problems.is_empty() {
            bail!("{}", problems.join("\n"));
        }
        Ok(out)
    }

    /// Takes the `f32` tensors named in `expected`, checking their shapes. Every
    /// missing, wrong-shaped, wrong-typed and (when `exhaustive`) unexpected tensor is
    /// listed in one error.
    pub fn take(
        &mut self,
        expected: &[(String, Vec<usize>)],
        exhaustive: bool,
    ) -> Result<BTreeMap<String, ArrayD<f32>>> {
        let mut problems = Vec::new();
        let mut out = BTreeMap::new();
        for (name, shape) in expected {
            match self.reals.remove(name) {
                Some(t) if t.shape() == shape.as_slice() => {
                    out.insert(name.clone(), t);
                }
                Some(t) => problems.push(format!("`{name}` has shape {:?}, expected {shape:?}", t.shape())),
                None if self.ints.contains_key(name) => {
                    problems.push(format!("`{name}` is an integer tensor, expected f32 {shape:?}"))
                }
                None => problems.push(format!("missing tensor `{name}` {shape:?}")),
            }
        }
        if exhaustive {
            let stray =
                self.reals.keys().chain(self.ints.keys().filter(|k| !expected.iter().any(|e| &e.0 == *k)));
            problems.extend(stray.map(|k| format!("unexpected tensor `{k}`")));
        }
        if problems.is_empty() { Ok(out) } else { bail!("{}", problems.join("\n")) }
    }

    /// The metadata entry `key`, parsed.
    pub fn meta<T: std::str::FromStr>(&self, key: &str) -> Result<T> {
        let Some(text) = self.metadata.get(key) else { bail!("metadata `{key}` is missing") };
        text.parse().map_err(|_| Error::new(format!("metadata `{key}` = `{text}` is not valid")))
    }

    /// Writes `reals` and `metadata` to `path` atomically (see the module docs).
    pub fn write_atomic(
        path: impl AsRef<Path>,
        reals: &[(String, &ArrayD<f32>)],
        metadata: &BTreeMap<String, String>,
    ) -> Result<()> {
        let path = path.as_ref();
        let io = |e: std::io::Error| Error::new(format!("{}: {e}", path.display()));
        let bytes: Vec<(&str, Vec<u8>, Vec<usize>)> = reals
            .iter()
            .map(|(n, t)| (n.as_str(), t.iter().flat_map(|v| v.to_le_bytes()).collect(), t.shape().to_vec()))
            .collect();
        let views = bytes
            .iter()
            .map(|(n, b, s)| {
                Ok((*n, TensorView::new(Dtype::F32, s.clone(), b).map_err(|e| Error::new(e.to_string()))?))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let data = safetensors::serialize(views, Some(meta)).map_err(|e| Error::new(e.to_string()))?;
        drop(bytes);
        let tmp = temporary(path);
        {
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&data).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        // The rename itself is durable once the directory is flushed; some file systems
        // cannot open a directory, and the data is already safe, so that is best effort.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// The temporary file a write to `path` goes through first: `.NAME.tmp` beside it.
pub fn temporary(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (ArrayD<f32>, ArrayD<f32>) {
        (
            ArrayD::from_shape_vec(vec![2, 3], vec![1., 2., 3., 4., 5., 6.5]).unwrap(),
            ArrayD::from_elem(vec![4], -0.25),
        )
    }

    #[test]
    fn round_trip_and_every_problem_listed() {
        let dir = std::env::temp_dir().join(format!("adjoint-tf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.safetensors");
        let (a, b) = sample();
        let meta = BTreeMap::from([("step".to_string(), "12".to_string())]);
        TensorFile::write_atomic(&path, &[("a".into(), &a), ("b".into(), &b)], &meta).unwrap();
        assert!(!temporary(&path).exists());
        let mut f = TensorFile::read(&path).unwrap();
        assert_eq!(f.meta::<u64>("step").unwrap(), 12);
        assert!(f.meta::<u64>("nope").unwrap_err().message.contains("missing"));
        let expected = vec![("a".to_string(), vec![2, 3]), ("b".to_string(), vec![4])];
        let got = f.clone().take(&expected, true).unwrap();
        assert_eq!((&got["a"], &got["b"]), (&a, &b));
        let wrong = vec![("a".to_string(), vec![3, 2]), ("c".to_string(), vec![1])];
        let e = f.take(&wrong, true).unwrap_err().message;
        assert!(e.contains("`a` has shape [2, 3], expected [3, 2]"), "{e}");
        assert!(e.contains("missing tensor `c` [1]"), "{e}");
        assert!(e.contains("unexpected tensor `b`"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn truncated_and_garbage_bytes_are_errors() {
        let (a, _) = sample();
        let dir = std::env::temp_dir().join(format!("adjoint-tf2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.safetensors");
        TensorFile::write_atomic(&path, &[("a".into(), &a)], &BTreeMap::new()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        for cut in 0..bytes.len() {
            assert!(TensorFile::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        for i in 0..flipped.len().min(64) {
            flipped[i] ^= 0x5a;
            let _ = TensorFile::from_bytes(&flipped); // must not panic
            flipped[i] ^= 0x5a;
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
