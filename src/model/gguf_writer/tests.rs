//! Unit tests of the GGUF writer: read back with candle's reader.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::quantized::{QTensor, gguf_file};
use candle_core::{Device, Tensor};

use super::*;

const ALL: [GgmlDType; 12] = [
    GgmlDType::F32,
    GgmlDType::F16,
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q2K,
    GgmlDType::Q3K,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

/// A unique path in the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        Self(std::env::temp_dir().join(format!(
            "ferrite-gguf-{}-{n}-{tag}.gguf",
            std::process::id()
        )))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn read(path: &Path) -> (gguf_file::Content, std::io::BufReader<File>) {
    let mut r = std::io::BufReader::new(File::open(path).unwrap());
    (gguf_file::Content::read(&mut r).unwrap(), r)
}

fn values(t: &QTensor) -> Vec<f32> {
    t.dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn bytes_round_trip_through_candle_for_every_dtype() {
    let (rows, cols) = (3, 512);
    let src: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * 0.3)
        .collect();
    let src = Tensor::from_vec(src, (rows, cols), &Device::Cpu).unwrap();
    let quantized: Vec<QTensor> = ALL
        .iter()
        .map(|&d| QTensor::quantize(&src, d).unwrap())
        .collect();
    let specs: Vec<TensorSpec> = quantized
        .iter()
        .map(|q| TensorSpec {
            name: format!("w.{:?}", q.dtype()),
            shape: vec![rows, cols],
            dtype: q.dtype(),
            data: TensorData::Bytes(q.data().unwrap().into_owned()),
        })
        .collect();
    let file = TempFile::new("bytes");
    write_gguf(&file.0, &[], &specs).unwrap();
    let (content, mut r) = read(&file.0);
    assert_eq!(content.tensor_data_offset % ALIGNMENT, 0);
    for q in &quantized {
        let name = format!("w.{:?}", q.dtype());
        assert_eq!(content.tensor_infos[&name].offset % ALIGNMENT, 0);
        let got = content.tensor(&mut r, &name, &Device::Cpu).unwrap();
        assert_eq!(got.dtype(), q.dtype());
        assert_eq!(got.shape().dims(), &[rows, cols]);
        assert_eq!(values(&got), values(q), "{name}");
    }
}

#[test]
fn metadata_round_trips() {
    let meta: Vec<(String, MetaValue)> = [
        ("a.u32", MetaValue::U32(7)),
        ("a.i32", MetaValue::I32(-3)),
        ("a.f32", MetaValue::F32(1.5)),
        ("a.bool", MetaValue::Bool(true)),
        ("a.str", MetaValue::Str("héllo".into())),
        (
            "a.strs",
            MetaValue::StrArray(vec!["x".into(), "Ġthe".into()]),
        ),
        ("a.i32s", MetaValue::I32Array(vec![1, -2])),
        ("a.f32s", MetaValue::F32Array(vec![0.25, -4.0])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let file = TempFile::new("meta");
    write_gguf(&file.0, &meta, &[]).unwrap();
    let m: HashMap<String, gguf_file::Value> = read(&file.0).0.metadata;
    assert_eq!(m["general.alignment"].to_u32().unwrap(), 32);
    assert_eq!(m["a.u32"].to_u32().unwrap(), 7);
    assert_eq!(m["a.i32"].to_i32().unwrap(), -3);
    assert_eq!(m["a.f32"].to_f32().unwrap(), 1.5);
    assert!(m["a.bool"].to_bool().unwrap());
    assert_eq!(m["a.str"].to_string().unwrap(), "héllo");
    let strs: Vec<&String> = m["a.strs"]
        .to_vec()
        .unwrap()
        .iter()
        .map(|v| v.to_string().unwrap())
        .collect();
    assert_eq!(strs, ["x", "Ġthe"]);
    let i32s: Vec<i32> = m["a.i32s"]
        .to_vec()
        .unwrap()
        .iter()
        .map(|v| v.to_i32().unwrap())
        .collect();
    assert_eq!(i32s, [1, -2]);
    let f32s: Vec<f32> = m["a.f32s"]
        .to_vec()
        .unwrap()
        .iter()
        .map(|v| v.to_f32().unwrap())
        .collect();
    assert_eq!(f32s, [0.25, -4.0]);
}

#[test]
fn random_blocks_are_finite_and_bounded() {
    let scale = 0.37;
    let mut dtypes = ALL.to_vec();
    dtypes.push(GgmlDType::BF16);
    let specs: Vec<TensorSpec> = dtypes
        .iter()
        .enumerate()
        .map(|(i, &dtype)| TensorSpec {
            name: format!("r{i}"),
            shape: vec![5, 256],
            dtype,
            data: TensorData::Random {
                seed: i as u64,
                scale,
            },
        })
        .collect();
    let file = TempFile::new("random");
    write_gguf(&file.0, &[], &specs).unwrap();
    let (content, mut r) = read(&file.0);
    for s in &specs {
        let t = content.tensor(&mut r, &s.name, &Device::Cpu).unwrap();
        assert_eq!((t.dtype(), t.shape().dims()), (s.dtype, &[5usize, 256][..]));
        let v = values(&t);
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(v.iter().all(|x| x.is_finite()), "{:?}", s.dtype);
        assert!(
            max <= scale && max > 0.5 * scale,
            "{:?}: max |w| {max}",
            s.dtype
        );
    }
}

#[test]
fn invalid_tensors_are_rejected() {
    let file = TempFile::new("invalid");
    let spec = |shape: Vec<usize>, dtype, data| TensorSpec {
        name: "t".into(),
        shape,
        dtype,
        data,
    };
    let random = TensorData::Random {
        seed: 1,
        scale: 1.0,
    };
    let cases = [
        spec(vec![2, 100], GgmlDType::Q4K, random.clone()),
        spec(vec![2, 16], GgmlDType::Q8_0, random.clone()),
        spec(vec![4], GgmlDType::F32, TensorData::Bytes(vec![0; 15])),
        spec(vec![256], GgmlDType::Q8K, random.clone()),
    ];
    for case in cases {
        assert!(write_gguf(&file.0, &[], &[case]).is_err());
    }
    let twice = [
        spec(vec![4], GgmlDType::F32, random.clone()),
        spec(vec![4], GgmlDType::F32, random),
    ];
    assert!(write_gguf(&file.0, &[], &twice).is_err());
    assert!(!file.0.exists() && !partial_path(&file.0).exists());
}

#[test]
fn synthetic_vocab_has_specials_bytes_and_merges() {
    let m = SyntheticModel::tiny(GgmlDType::Q8_0);
    let (tokens, types) = m.vocab();
    assert_eq!((tokens.len(), types.len()), (320, 320));
    assert_eq!((tokens[1].as_str(), types[1]), ("<|im_start|>", 3));
    assert_eq!(tokens[3 + b' ' as usize], "Ġ");
    assert!(tokens.contains(&"Ġthe".to_string()));
    let unique: HashSet<&String> = tokens.iter().collect();
    assert_eq!(unique.len(), tokens.len());
}
