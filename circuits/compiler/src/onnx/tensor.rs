//! Import-time constants: decoding `TensorProto`s, numpy broadcasting, and
//! the small constant-folding kernels used for shape arithmetic (Gather,
//! Unsqueeze/Squeeze, Concat, Cast, element-wise Add/Sub/Mul).
//!
//! Integer tensors carry [`SymInt`]s so that the symbolic batch size
//! produced by `Shape` of the data tensor can flow through the folding.

use super::proto::tensor_proto::DataType;
use super::proto::TensorProto;

/// An integer known at import time, or the (symbolic) batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SymInt {
    Lit(i64),
    Batch,
}

/// Element storage of a constant.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Data {
    F32(Vec<f32>),
    Int(Vec<SymInt>),
    /// A data type we do not compute with; only its name is kept.
    Unsupported,
}

/// A constant tensor: dims, the original ONNX data type, and elements.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Const {
    pub dims: Vec<usize>,
    pub dtype: i32,
    pub data: Data,
}

/// Name of an ONNX data type code, e.g. `FLOAT` or `INT64`.
pub(crate) fn dtype_name(code: i32) -> String {
    match DataType::try_from(code) {
        Ok(t) => t.as_str_name().to_string(),
        Err(_) => format!("unknown type {code}"),
    }
}

/// Number of elements of a shape, with overflow checking.
pub(crate) fn element_count(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Normalizes a possibly negative axis for a tensor of rank `rank`.
pub(crate) fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let rank = i64::try_from(rank).ok()?;
    let a = if axis < 0 { axis + rank } else { axis };
    if (0..rank).contains(&a) {
        usize::try_from(a).ok()
    } else {
        None
    }
}

impl Const {
    pub(crate) fn f32(dims: Vec<usize>, data: Vec<f32>) -> Self {
        Self {
            dims,
            dtype: DataType::Float as i32,
            data: Data::F32(data),
        }
    }

    pub(crate) fn int(dims: Vec<usize>, data: Vec<SymInt>) -> Self {
        Self {
            dims,
            dtype: DataType::Int64 as i32,
            data: Data::Int(data),
        }
    }

    /// Integer values that must all be known (no symbolic batch).
    pub(crate) fn known_ints(&self) -> Result<Vec<i64>, String> {
        match &self.data {
            Data::Int(v) => v
                .iter()
                .map(|s| match s {
                    SymInt::Lit(i) => Ok(*i),
                    SymInt::Batch => Err("it depends on the batch size".to_string()),
                })
                .collect(),
            _ => Err(format!(
                "expected an integer tensor, got {}",
                dtype_name(self.dtype)
            )),
        }
    }

    /// Decodes an ONNX tensor. Float32 becomes [`Data::F32`], integer and
    /// bool types become [`Data::Int`], anything else [`Data::Unsupported`].
    pub(crate) fn from_proto(t: &TensorProto) -> Result<Const, String> {
        let dims = t
            .dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
            .collect::<Result<Vec<_>, _>>()?;
        let count = element_count(&dims).ok_or("the element count overflows")?;
        let raw = &t.raw_data;
        let mismatch = |got: usize| {
            format!(
                "has {got} values but its dims {dims:?} need {count} (external data is not \
                 supported)"
            )
        };
        let dtype = DataType::try_from(t.data_type).unwrap_or(DataType::Undefined);
        let data = match dtype {
            DataType::Float => {
                let v: Vec<f32> = if !raw.is_empty() {
                    if raw.len() != count.saturating_mul(4) {
                        return Err(mismatch(raw.len() / 4));
                    }
                    raw.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect()
                } else {
                    t.float_data.clone()
                };
                if v.len() != count {
                    return Err(mismatch(v.len()));
                }
                Data::F32(v)
            }
            DataType::Int64
            | DataType::Int32
            | DataType::Int16
            | DataType::Int8
            | DataType::Uint8
            | DataType::Uint16
            | DataType::Uint32
            | DataType::Uint64
            | DataType::Bool => {
                let v: Vec<i64> = if !raw.is_empty() {
                    let width = match dtype {
                        DataType::Int64 | DataType::Uint64 => 8,
                        DataType::Int32 | DataType::Uint32 => 4,
                        DataType::Int16 | DataType::Uint16 => 2,
                        _ => 1,
                    };
                    if raw.len() != count.saturating_mul(width) {
                        return Err(mismatch(raw.len() / width));
                    }
                    raw.chunks_exact(width)
                        .map(|b| raw_int(dtype, b))
                        .collect::<Result<_, _>>()?
                } else if dtype == DataType::Int64 {
                    t.int64_data.clone()
                } else {
                    t.int32_data.iter().map(|&i| i64::from(i)).collect()
                };
                if v.len() != count {
                    return Err(mismatch(v.len()));
                }
                Data::Int(v.into_iter().map(SymInt::Lit).collect())
            }
            DataType::Undefined => {
                return Err(format!("invalid data type code {}", t.data_type));
            }
            _ => Data::Unsupported,
        };
        Ok(Const {
            dims,
            dtype: t.data_type,
            data,
        })
    }
}

fn raw_int(dtype: DataType, b: &[u8]) -> Result<i64, String> {
    Ok(match dtype {
        DataType::Int64 => i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        DataType::Uint64 => {
            let u = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            i64::try_from(u).map_err(|_| format!("UINT64 value {u} is out of range"))?
        }
        DataType::Int32 => i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DataType::Uint32 => i64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DataType::Int16 => i64::from(i16::from_le_bytes([b[0], b[1]])),
        DataType::Uint16 => i64::from(u16::from_le_bytes([b[0], b[1]])),
        DataType::Int8 => i64::from(i8::from_le_bytes([b[0]])),
        _ => i64::from(b[0]),
    })
}

/// Numpy broadcast of two shapes.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Expands `data` of shape `dims` to `target` by numpy broadcasting, where
/// `target` must already be the broadcast result (no axis of `dims` may be
/// larger than the matching target axis, and `dims` may not have more axes).
pub(crate) fn expand<T: Copy>(data: &[T], dims: &[usize], target: &[usize]) -> Option<Vec<T>> {
    if dims.len() > target.len() || element_count(dims)? != data.len() {
        return None;
    }
    let offset = target.len() - dims.len();
    // Source strides aligned to the target's axes; 0 on broadcast axes.
    let mut strides = vec![0usize; target.len()];
    let mut stride = 1;
    for (i, &d) in dims.iter().enumerate().rev() {
        let t = target[i + offset];
        if d == t {
            strides[i + offset] = stride;
        } else if d != 1 {
            return None;
        }
        stride *= d;
    }
    let total = element_count(target)?;
    let mut out = Vec::with_capacity(total);
    let mut index = vec![0usize; target.len()];
    for _ in 0..total {
        let src: usize = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
        out.push(data[src]);
        // Increment the multi-index, last axis fastest.
        for axis in (0..target.len()).rev() {
            index[axis] += 1;
            if index[axis] < target[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    Some(out)
}

/// Element-wise binary operations that can be folded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
}

/// Folds `a op b` on two constants, with broadcasting.
pub(crate) fn binary(op: BinOp, a: &Const, b: &Const) -> Result<Const, String> {
    let dims = broadcast_shape(&a.dims, &b.dims).ok_or_else(|| {
        format!(
            "shapes {:?} and {:?} do not broadcast together",
            a.dims, b.dims
        )
    })?;
    let bad = || "internal broadcast error".to_string();
    match (&a.data, &b.data) {
        (Data::F32(x), Data::F32(y)) => {
            let x = expand(x, &a.dims, &dims).ok_or_else(bad)?;
            let y = expand(y, &b.dims, &dims).ok_or_else(bad)?;
            let v = x
                .iter()
                .zip(&y)
                .map(|(&p, &q)| match op {
                    BinOp::Add => p + q,
                    BinOp::Sub => p - q,
                    BinOp::Mul => p * q,
                })
                .collect();
            Ok(Const::f32(dims, v))
        }
        (Data::Int(x), Data::Int(y)) => {
            let x = expand(x, &a.dims, &dims).ok_or_else(bad)?;
            let y = expand(y, &b.dims, &dims).ok_or_else(bad)?;
            let v = x
                .iter()
                .zip(&y)
                .map(|(p, q)| match (p, q) {
                    (SymInt::Lit(p), SymInt::Lit(q)) => {
                        let r = match op {
                            BinOp::Add => p.checked_add(*q),
                            BinOp::Sub => p.checked_sub(*q),
                            BinOp::Mul => p.checked_mul(*q),
                        };
                        r.map(SymInt::Lit)
                            .ok_or_else(|| "integer overflow".to_string())
                    }
                    _ => Err("the result depends on the batch size".to_string()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Const::int(dims, v))
        }
        _ => Err(format!(
            "element types {} and {} cannot be combined",
            dtype_name(a.dtype),
            dtype_name(b.dtype)
        )),
    }
}

/// Gathers along `axis` of a constant (ONNX `Gather`).
pub(crate) fn gather(data: &Const, indices: &Const, axis: i64) -> Result<Const, String> {
    let rank = data.dims.len();
    let axis = norm_axis(axis, rank)
        .ok_or_else(|| format!("axis {axis} is out of range for rank {rank}"))?;
    let idx = indices.known_ints()?;
    let n = data.dims[axis];
    let outer: usize = data.dims[..axis].iter().product();
    let inner: usize = data.dims[axis + 1..].iter().product();
    let mut picks = Vec::with_capacity(idx.len());
    for &i in &idx {
        let j = if i < 0 { i + n as i64 } else { i };
        match usize::try_from(j) {
            Ok(j) if j < n => picks.push(j),
            _ => return Err(format!("index {i} is out of range for axis of size {n}")),
        }
    }
    let mut dims = data.dims[..axis].to_vec();
    dims.extend_from_slice(&indices.dims);
    dims.extend_from_slice(&data.dims[axis + 1..]);
    fn pick<T: Copy>(v: &[T], outer: usize, n: usize, inner: usize, picks: &[usize]) -> Vec<T> {
        let mut out = Vec::with_capacity(outer * picks.len() * inner);
        for o in 0..outer {
            for &p in picks {
                let start = (o * n + p) * inner;
                out.extend_from_slice(&v[start..start + inner]);
            }
        }
        out
    }
    let data_out = match &data.data {
        Data::F32(v) => Data::F32(pick(v, outer, n, inner, &picks)),
        Data::Int(v) => Data::Int(pick(v, outer, n, inner, &picks)),
        Data::Unsupported => {
            return Err(format!("cannot gather from {}", dtype_name(data.dtype)));
        }
    };
    Ok(Const {
        dims,
        dtype: data.dtype,
        data: data_out,
    })
}

/// Shape after inserting unit axes at `axes` (ONNX `Unsqueeze`).
pub(crate) fn unsqueeze_dims(dims: &[usize], axes: &[i64]) -> Result<Vec<usize>, String> {
    let out_rank = dims.len() + axes.len();
    let mut inserted = vec![false; out_rank];
    for &a in axes {
        let n = norm_axis(a, out_rank)
            .ok_or_else(|| format!("axis {a} is out of range for output rank {out_rank}"))?;
        if inserted[n] {
            return Err(format!("axis {a} is repeated"));
        }
        inserted[n] = true;
    }
    let mut rest = dims.iter();
    Ok(inserted
        .iter()
        .map(|&ins| {
            if ins {
                1
            } else {
                rest.next().copied().unwrap_or(1)
            }
        })
        .collect())
}

/// Shape after removing unit axes (ONNX `Squeeze`); `None` removes all.
pub(crate) fn squeeze_dims(dims: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>, String> {
    let rank = dims.len();
    let mut remove = vec![false; rank];
    match axes {
        None => {
            for (r, &d) in remove.iter_mut().zip(dims) {
                *r = d == 1;
            }
        }
        Some(axes) => {
            for &a in axes {
                let n = norm_axis(a, rank)
                    .ok_or_else(|| format!("axis {a} is out of range for rank {rank}"))?;
                if dims[n] != 1 {
                    return Err(format!("axis {a} has size {}, not 1", dims[n]));
                }
                remove[n] = true;
            }
        }
    }
    Ok(dims
        .iter()
        .zip(&remove)
        .filter(|(_, &r)| !r)
        .map(|(&d, _)| d)
        .collect())
}

/// Concatenates constants along `axis` (ONNX `Concat`).
pub(crate) fn concat(parts: &[&Const], axis: i64) -> Result<Const, String> {
    let first = parts.first().ok_or("no inputs")?;
    let rank = first.dims.len();
    let axis = norm_axis(axis, rank)
        .ok_or_else(|| format!("axis {axis} is out of range for rank {rank}"))?;
    for p in parts {
        let same_rest = p.dims.len() == rank
            && p.dims
                .iter()
                .zip(&first.dims)
                .enumerate()
                .all(|(i, (a, b))| i == axis || a == b);
        if !same_rest {
            return Err(format!(
                "input shapes {:?} and {:?} differ outside axis {axis}",
                first.dims, p.dims
            ));
        }
    }
    let outer: usize = first.dims[..axis].iter().product();
    let inner: usize = first.dims[axis + 1..].iter().product();
    let mut dims = first.dims.clone();
    dims[axis] = parts.iter().map(|p| p.dims[axis]).sum();
    // interleave each part's slab of `dims[axis] * inner` values per outer index
    fn interleave<T: Clone>(slices: &[(&[T], usize)], outer: usize) -> Vec<T> {
        let mut out = Vec::new();
        for o in 0..outer {
            for (v, chunk) in slices {
                out.extend_from_slice(&v[o * chunk..(o + 1) * chunk]);
            }
        }
        out
    }
    let floats: Option<Vec<(&[f32], usize)>> = parts
        .iter()
        .map(|p| match &p.data {
            Data::F32(v) => Some((v.as_slice(), p.dims[axis] * inner)),
            _ => None,
        })
        .collect();
    let ints: Option<Vec<(&[SymInt], usize)>> = parts
        .iter()
        .map(|p| match &p.data {
            Data::Int(v) => Some((v.as_slice(), p.dims[axis] * inner)),
            _ => None,
        })
        .collect();
    let data = match (floats, ints) {
        (Some(f), _) => Data::F32(interleave(&f, outer)),
        (None, Some(i)) => Data::Int(interleave(&i, outer)),
        _ => return Err("inputs have different or unsupported element types".into()),
    };
    Ok(Const {
        dims,
        dtype: first.dtype,
        data,
    })
}

/// Converts a constant to another ONNX data type (ONNX `Cast`): float32 and
/// the integer/bool types are supported; float → int truncates toward zero.
pub(crate) fn cast(c: &Const, to: i32) -> Result<Const, String> {
    let target = DataType::try_from(to).map_err(|_| format!("invalid target type {to}"))?;
    let data = match (target, &c.data) {
        (DataType::Float, Data::F32(v)) => Data::F32(v.clone()),
        (DataType::Float, Data::Int(v)) => Data::F32(
            v.iter()
                .map(|s| match s {
                    SymInt::Lit(i) => Ok(*i as f32),
                    SymInt::Batch => Err("the value depends on the batch size".to_string()),
                })
                .collect::<Result<_, _>>()?,
        ),
        (
            DataType::Int64
            | DataType::Int32
            | DataType::Int16
            | DataType::Int8
            | DataType::Uint8
            | DataType::Uint16
            | DataType::Uint32
            | DataType::Uint64,
            Data::Int(v),
        ) => Data::Int(v.clone()),
        (DataType::Bool, Data::Int(v)) => Data::Int(
            v.iter()
                .map(|s| match s {
                    SymInt::Lit(i) => SymInt::Lit(i64::from(*i != 0)),
                    // A batch size is never zero.
                    SymInt::Batch => SymInt::Lit(1),
                })
                .collect(),
        ),
        (DataType::Bool, Data::F32(v)) => Data::Int(
            v.iter()
                .map(|&f| SymInt::Lit(i64::from(f != 0.0)))
                .collect(),
        ),
        (
            DataType::Int64
            | DataType::Int32
            | DataType::Int16
            | DataType::Int8
            | DataType::Uint8
            | DataType::Uint16
            | DataType::Uint32
            | DataType::Uint64,
            Data::F32(v),
        ) => Data::Int(
            v.iter()
                .map(|&f| {
                    if f.is_finite() {
                        Ok(SymInt::Lit(f.trunc() as i64))
                    } else {
                        Err(format!("cannot convert {f} to an integer"))
                    }
                })
                .collect::<Result<_, _>>()?,
        ),
        _ => {
            return Err(format!(
                "cast from {} to {} is not supported",
                dtype_name(c.dtype),
                dtype_name(to)
            ))
        }
    };
    Ok(Const {
        dims: c.dims.clone(),
        dtype: to,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting() {
        assert_eq!(broadcast_shape(&[3, 1], &[4]), Some(vec![3, 4]));
        assert_eq!(broadcast_shape(&[2], &[3]), None);
        assert_eq!(
            expand(&[1, 2, 3], &[3, 1], &[3, 2]),
            Some(vec![1, 1, 2, 2, 3, 3])
        );
        assert_eq!(expand(&[1, 2], &[2], &[2, 2]), Some(vec![1, 2, 1, 2]));
        assert_eq!(expand(&[1, 2], &[2], &[3]), None);
    }

    #[test]
    fn shape_chain_folding() {
        let shape = Const::int(
            vec![4],
            vec![
                SymInt::Batch,
                SymInt::Lit(4),
                SymInt::Lit(3),
                SymInt::Lit(3),
            ],
        );
        let zero = Const::int(vec![], vec![SymInt::Lit(0)]);
        let b = gather(&shape, &zero, 0).expect("gather");
        assert_eq!(b.dims, Vec::<usize>::new());
        assert_eq!(b.data, Data::Int(vec![SymInt::Batch]));
        let b1 = Const {
            dims: unsqueeze_dims(&b.dims, &[0]).expect("unsqueeze"),
            ..b
        };
        let minus1 = Const::int(vec![1], vec![SymInt::Lit(-1)]);
        let target = concat(&[&b1, &minus1], 0).expect("concat");
        assert_eq!(target.dims, vec![2]);
        assert_eq!(target.data, Data::Int(vec![SymInt::Batch, SymInt::Lit(-1)]));
        assert_eq!(squeeze_dims(&[1, 3, 1], None).expect("squeeze"), vec![3]);
        assert!(squeeze_dims(&[1, 3], Some(&[1])).is_err());
    }
}
