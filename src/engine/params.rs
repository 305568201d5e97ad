//! Parameters as one flat vector.
//!
//! A network's parameters, gradients, Hessian-vector products, random directions and
//! eigenvectors are all [`ParamVec`]s: one contiguous `Array1` plus a shared [`Layout`]
//! that names every tensor by its PyTorch `state_dict` path (`layer1.0.conv1.weight`),
//! gives its shape, its [`Role`] and its offset. A perturbed model θ + α·d is just another
//! vector; nothing mutates a shared model.
//!
//! Order: tensors appear in PyTorch `state_dict()` order, which for the zoo equals
//! `parameters()` order once the buffers (running statistics) are skipped.

use std::sync::Arc;

use ndarray::{Array1, ArrayView1, ArrayViewD, ArrayViewMutD, IxDyn};
use serde::{Deserialize, Serialize};

use super::Scalar;

/// What a tensor is to the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Conv or linear weight (≥ 2 dimensions); filter normalization acts on these.
    Weight,
    /// Conv or linear bias.
    Bias,
    /// Batch-norm scale γ (PyTorch `weight`).
    BnScale,
    /// Batch-norm shift β (PyTorch `bias`).
    BnShift,
    /// Batch-norm running mean (a buffer, not trainable).
    RunningMean,
    /// Batch-norm running variance (a buffer, not trainable).
    RunningVar,
}

impl Role {
    /// Whether PyTorch lists the tensor in `parameters()` (receives a gradient).
    pub fn is_trainable(self) -> bool {
        !matches!(self, Role::RunningMean | Role::RunningVar)
    }
}

/// One named tensor inside a [`ParamVec`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: Role,
    pub offset: usize,
}

impl TensorSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Names, shapes, roles and offsets of every tensor of a model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    tensors: Vec<TensorSpec>,
    total: usize,
}

impl Layout {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a tensor and returns its index.
    ///
    /// # Panics
    /// If the name is already present (a zoo bug, never user input).
    pub fn push(&mut self, name: impl Into<String>, shape: &[usize], role: Role) -> usize {
        let name = name.into();
        assert!(
            self.index_of(&name).is_none(),
            "duplicate tensor name {name}"
        );
        let spec = TensorSpec {
            name,
            shape: shape.to_vec(),
            role,
            offset: self.total,
        };
        self.total += spec.len();
        self.tensors.push(spec);
        self.tensors.len() - 1
    }

    /// Total number of scalars, running statistics included.
    pub fn len(&self) -> usize {
        self.total
    }
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
    pub fn tensors(&self) -> &[TensorSpec] {
        &self.tensors
    }
    pub fn tensor(&self, index: usize) -> &TensorSpec {
        &self.tensors[index]
    }
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }
    pub fn get(&self, name: &str) -> Option<&TensorSpec> {
        self.tensors.iter().find(|t| t.name == name)
    }
    /// Number of trainable scalars (what PyTorch counts with `p.numel()` over `parameters()`).
    pub fn trainable_len(&self) -> usize {
        self.tensors
            .iter()
            .filter(|t| t.role.is_trainable())
            .map(|t| t.len())
            .sum()
    }
    /// A 0/1 mask over all scalars, 1 where `keep(tensor)` holds.
    pub fn mask<T: Scalar>(&self, keep: impl Fn(&TensorSpec) -> bool) -> Array1<T> {
        let mut m = Array1::zeros(self.total);
        for t in &self.tensors {
            if keep(t) {
                m.slice_mut(ndarray::s![t.range()]).fill(T::one());
            }
        }
        m
    }
}

/// A flat parameter-shaped vector with its [`Layout`].
#[derive(Clone, Debug)]
pub struct ParamVec<T: Scalar> {
    pub layout: Arc<Layout>,
    pub data: Array1<T>,
}

impl<T: Scalar> ParamVec<T> {
    pub fn zeros(layout: Arc<Layout>) -> Self {
        let n = layout.len();
        Self {
            layout,
            data: Array1::zeros(n),
        }
    }

    /// # Panics
    /// If `data.len()` differs from the layout's length.
    pub fn from_data(layout: Arc<Layout>, data: Array1<T>) -> Self {
        assert_eq!(
            layout.len(),
            data.len(),
            "ParamVec length does not match its layout"
        );
        Self { layout, data }
    }

    /// The tensor at `index`, in its original shape.
    pub fn tensor(&self, index: usize) -> ArrayViewD<'_, T> {
        let spec = self.layout.tensor(index);
        self.data
            .slice(ndarray::s![spec.range()])
            .into_shape_with_order(IxDyn(&spec.shape))
            .expect("contiguous slice")
    }

    pub fn tensor_mut(&mut self, index: usize) -> ArrayViewMutD<'_, T> {
        let spec = self.layout.tensor(index).clone();
        self.data
            .slice_mut(ndarray::s![spec.range()])
            .into_shape_with_order(IxDyn(&spec.shape))
            .expect("contiguous slice")
    }

    pub fn by_name(&self, name: &str) -> Option<ArrayViewD<'_, T>> {
        self.layout.index_of(name).map(|i| self.tensor(i))
    }

    /// ⟨self, other⟩, accumulated in f64.
    pub fn dot(&self, other: &Self) -> f64 {
        dot_f64(self.data.view(), other.data.view())
    }

    /// ‖self‖₂, accumulated in f64.
    pub fn norm(&self) -> f64 {
        self.dot(self).sqrt()
    }

    /// self += a · x
    pub fn axpy(&mut self, a: T, x: &Self) {
        self.data.scaled_add(a, &x.data);
    }

    /// Converts every scalar to another precision.
    pub fn cast<U: Scalar>(&self) -> ParamVec<U> {
        ParamVec {
            layout: self.layout.clone(),
            data: self.data.mapv(|v| U::from_f(v.as_f64())),
        }
    }

    /// Names of tensors holding a NaN or infinite value.
    pub fn non_finite_tensors(&self) -> Vec<String> {
        (0..self.layout.tensors().len())
            .filter(|&i| self.tensor(i).iter().any(|v| !v.is_finite()))
            .map(|i| self.layout.tensor(i).name.clone())
            .collect()
    }
}

/// Dot product accumulated in f64 whatever the storage precision.
pub fn dot_f64<T: Scalar>(a: ArrayView1<T>, b: ArrayView1<T>) -> f64 {
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| x.as_f64() * y.as_f64())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_views() {
        let mut l = Layout::new();
        l.push("a.weight", &[2, 3], Role::Weight);
        l.push("a.bias", &[2], Role::Bias);
        l.push("bn.running_mean", &[2], Role::RunningMean);
        assert_eq!(l.len(), 10);
        assert_eq!(l.trainable_len(), 8);
        assert_eq!(l.tensor(1).offset, 6);
        let l = Arc::new(l);
        let p = ParamVec::from_data(l, Array1::from_iter((0..10).map(|i| i as f64)));
        assert_eq!(p.tensor(0).shape(), &[2, 3]);
        assert_eq!(p.tensor(0)[[1, 2]], 5.0);
        assert_eq!(p.by_name("a.bias").unwrap()[[1]], 7.0);
        let m: Array1<f64> = p.layout.mask(|t| t.role.is_trainable());
        assert_eq!(m.sum(), 8.0);
    }
}
