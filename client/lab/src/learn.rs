//! Small deterministic learners for the attacks: what an attacker trains on
//! the answers it collected.
//!
//! * [`SoftmaxRegression`]: multinomial logistic regression (the victim
//!   class of `digits-logreg`), trained by mini-batch or full-batch Adam
//!   with L2.
//! * [`Mlp`]: one hidden ReLU layer of configurable width, mini-batch Adam.
//! * [`least_squares`]: ridge-stabilized normal equations solved by
//!   Cholesky (nalgebra), for equation solving.
//!
//! Everything is plain `Vec<f64>` arithmetic driven by the seeded
//! [`Rng`], so a run with the same seed gives the same model. Parallel
//! loops (rayon) only evaluate rows or sum fixed chunks in a fixed order, so
//! they do not change results.

use rayon::prelude::*;

use super::{AuditError, Rng};

/// Raw digits pixels (`0..=16`) to `[0, 1]`: the default scaling of the
/// learners' inputs.
pub fn scale_pixels(row: &[f64]) -> Vec<f64> {
    row.iter().map(|v| v / 16.0).collect()
}

/// Index of the largest value (the first on ties), as the circuits' argmax.
pub fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// Numerically stable softmax.
pub fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// How a learner is trained: Adam over shuffled mini-batches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainConfig {
    /// Passes over the data (before the `max_steps` cap).
    pub epochs: usize,
    /// Rows per step; a batch at least as large as the data set is
    /// full-batch gradient descent.
    pub batch: usize,
    pub learning_rate: f64,
    /// L2 penalty on the weights (not the biases).
    pub l2: f64,
    /// Cap on the optimizer steps of one `fit`, so training on 65,000
    /// answers costs about what training on 6,500 does.
    pub max_steps: usize,
}

impl TrainConfig {
    /// Defaults for [`SoftmaxRegression`].
    pub fn softmax() -> Self {
        Self {
            epochs: 60,
            batch: 64,
            learning_rate: 0.05,
            l2: 1e-5,
            max_steps: 4000,
        }
    }

    /// Defaults for [`Mlp`].
    pub fn mlp() -> Self {
        Self {
            epochs: 60,
            batch: 64,
            learning_rate: 0.005,
            l2: 1e-5,
            max_steps: 4000,
        }
    }
}

/// A differentiable classifier over feature vectors.
pub trait Classifier: Send + Sync {
    fn inputs(&self) -> usize;
    fn classes(&self) -> usize;
    /// Unnormalized class scores.
    fn logits(&self, x: &[f64]) -> Vec<f64>;
    /// `∂L/∂x` given `∂L/∂logits` at `x` (backpropagation to the input).
    fn backprop_input(&self, x: &[f64], dlogits: &[f64]) -> Vec<f64>;
    /// Trains on `(x, y)`, continuing from the current parameters (warm
    /// start), for `cfg.epochs` passes or `cfg.max_steps` steps.
    fn fit(
        &mut self,
        xs: &[Vec<f64>],
        ys: &[usize],
        cfg: &TrainConfig,
        rng: &mut Rng,
    ) -> Result<(), AuditError>;

    fn probabilities(&self, x: &[f64]) -> Vec<f64> {
        softmax(&self.logits(x))
    }

    fn predict(&self, x: &[f64]) -> usize {
        argmax(&self.logits(x))
    }

    /// Predictions for many rows (in parallel, order kept).
    fn predict_all(&self, xs: &[Vec<f64>]) -> Vec<usize> {
        xs.par_iter().map(|x| self.predict(x)).collect()
    }

    /// Top-1 minus top-2 probability: small near a decision boundary.
    fn margin(&self, x: &[f64]) -> f64 {
        let p = self.probabilities(x);
        let (mut a, mut b) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        for v in p {
            if v > a {
                b = a;
                a = v;
            } else if v > b {
                b = v;
            }
        }
        if b.is_finite() {
            a - b
        } else {
            1.0
        }
    }

    /// `∂p_class/∂x`: one row of the Jacobian of the probabilities
    /// (Papernot's dataset augmentation).
    fn probability_gradient(&self, x: &[f64], class: usize) -> Vec<f64> {
        let p = self.probabilities(x);
        let pc = p.get(class).copied().unwrap_or(0.0);
        let dz: Vec<f64> = p
            .iter()
            .enumerate()
            .map(|(j, pj)| pc * (f64::from(u8::from(j == class)) - pj))
            .collect();
        self.backprop_input(x, &dz)
    }

    /// `∂(−log p_label)/∂x`: the cross-entropy gradient FGSM follows.
    fn loss_gradient(&self, x: &[f64], label: usize) -> Vec<f64> {
        let mut dz = self.probabilities(x);
        if let Some(v) = dz.get_mut(label) {
            *v -= 1.0;
        }
        self.backprop_input(x, &dz)
    }
}

fn check_data(
    xs: &[Vec<f64>],
    ys: &[usize],
    inputs: usize,
    classes: usize,
) -> Result<(), AuditError> {
    if xs.len() != ys.len() {
        return Err(AuditError::Invalid(format!(
            "{} training rows but {} labels",
            xs.len(),
            ys.len()
        )));
    }
    if let Some(r) = xs.iter().find(|r| r.len() != inputs) {
        return Err(AuditError::Invalid(format!(
            "a training row has {} features, the model takes {inputs}",
            r.len()
        )));
    }
    if let Some(y) = ys.iter().find(|y| **y >= classes) {
        return Err(AuditError::Invalid(format!(
            "label {y} with {classes} classes"
        )));
    }
    Ok(())
}

/// Fisher–Yates shuffle driven by the attacker's seeded generator.
pub fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i + 1);
        v.swap(i, j);
    }
}

/// Adam state for one flat parameter vector.
struct Adam {
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

impl Adam {
    fn new(n: usize) -> Self {
        Self {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    fn step(&mut self, params: &mut [f64], grad: &[f64], lr: f64) {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        self.t += 1;
        let c1 = 1.0 - B1.powi(self.t);
        let c2 = 1.0 - B2.powi(self.t);
        for i in 0..params.len() {
            self.m[i] = B1 * self.m[i] + (1.0 - B1) * grad[i];
            self.v[i] = B2 * self.v[i] + (1.0 - B2) * grad[i] * grad[i];
            params[i] -= lr * (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + 1e-8);
        }
    }
}

/// The shuffled mini-batch schedule of one `fit`: calls `step(batch)` with
/// row indices, at most `cfg.max_steps` times.
fn for_batches(n: usize, cfg: &TrainConfig, rng: &mut Rng, mut step: impl FnMut(&[usize])) {
    if n == 0 {
        return;
    }
    let batch = cfg.batch.clamp(1, n);
    let mut order: Vec<usize> = (0..n).collect();
    let mut steps = 0;
    for _ in 0..cfg.epochs {
        shuffle(&mut order, rng);
        for chunk in order.chunks(batch) {
            if steps >= cfg.max_steps {
                return;
            }
            step(chunk);
            steps += 1;
        }
    }
}

/// Rows per parallel partial sum: fixed, so sums are ordered the same way
/// whatever the thread count.
const CHUNK: usize = 32;

/// Multinomial logistic regression: `logits = W·x + b`.
#[derive(Clone, Debug, PartialEq)]
pub struct SoftmaxRegression {
    inputs: usize,
    classes: usize,
    /// Row-major `[class][inputs + 1]`, the bias last.
    weights: Vec<f64>,
}

impl SoftmaxRegression {
    /// All-zero parameters (the loss is convex, so no random start).
    pub fn new(inputs: usize, classes: usize) -> Self {
        Self {
            inputs,
            classes,
            weights: vec![0.0; classes * (inputs + 1)],
        }
    }

    /// A model with given per-class `[w…, b]` rows (e.g. from equation
    /// solving).
    pub fn from_rows(rows: &[Vec<f64>]) -> Result<Self, AuditError> {
        let Some(first) = rows.first() else {
            return Err(AuditError::Invalid("no classes".into()));
        };
        let width = first.len();
        if width == 0 || rows.iter().any(|r| r.len() != width) {
            return Err(AuditError::Invalid(
                "class rows must have one equal, non-zero length".into(),
            ));
        }
        Ok(Self {
            inputs: width - 1,
            classes: rows.len(),
            weights: rows.concat(),
        })
    }

    /// Class `k`'s `[w…, b]`.
    pub fn row(&self, k: usize) -> &[f64] {
        let w = self.inputs + 1;
        &self.weights[k * w..(k + 1) * w]
    }

    /// Gradient of the mean cross-entropy over `idx` (plus L2).
    fn gradient(&self, xs: &[Vec<f64>], ys: &[usize], idx: &[usize], l2: f64) -> Vec<f64> {
        let w = self.inputs + 1;
        let parts: Vec<Vec<f64>> = idx
            .par_chunks(CHUNK)
            .map(|chunk| {
                let mut g = vec![0.0; self.weights.len()];
                for &i in chunk {
                    let x = &xs[i];
                    let mut p = self.probabilities(x);
                    p[ys[i]] -= 1.0;
                    for (k, d) in p.iter().enumerate() {
                        let gk = &mut g[k * w..(k + 1) * w];
                        for (gj, xj) in gk.iter_mut().zip(x) {
                            *gj += d * xj;
                        }
                        gk[self.inputs] += d;
                    }
                }
                g
            })
            .collect();
        let mut g = vec![0.0; self.weights.len()];
        for part in parts {
            for (a, b) in g.iter_mut().zip(part) {
                *a += b;
            }
        }
        let n = idx.len().max(1) as f64;
        for (i, gi) in g.iter_mut().enumerate() {
            *gi /= n;
            if i % w != self.inputs {
                *gi += l2 * self.weights[i];
            }
        }
        g
    }
}

impl Classifier for SoftmaxRegression {
    fn inputs(&self) -> usize {
        self.inputs
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn logits(&self, x: &[f64]) -> Vec<f64> {
        (0..self.classes)
            .map(|k| {
                let r = self.row(k);
                r[..self.inputs]
                    .iter()
                    .zip(x)
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
                    + r[self.inputs]
            })
            .collect()
    }

    fn backprop_input(&self, _x: &[f64], dlogits: &[f64]) -> Vec<f64> {
        let mut g = vec![0.0; self.inputs];
        for (k, d) in dlogits.iter().enumerate().take(self.classes) {
            for (gj, wj) in g.iter_mut().zip(&self.row(k)[..self.inputs]) {
                *gj += d * wj;
            }
        }
        g
    }

    fn fit(
        &mut self,
        xs: &[Vec<f64>],
        ys: &[usize],
        cfg: &TrainConfig,
        rng: &mut Rng,
    ) -> Result<(), AuditError> {
        check_data(xs, ys, self.inputs, self.classes)?;
        let mut adam = Adam::new(self.weights.len());
        for_batches(xs.len(), cfg, rng, |idx| {
            let g = self.gradient(xs, ys, idx, cfg.l2);
            adam.step(&mut self.weights, &g, cfg.learning_rate);
        });
        Ok(())
    }
}

/// One hidden ReLU layer: `logits = W2·relu(W1·x + b1) + b2`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    inputs: usize,
    hidden: usize,
    classes: usize,
    /// Flat `[w1 (hidden×inputs), b1 (hidden), w2 (classes×hidden), b2 (classes)]`.
    params: Vec<f64>,
}

impl Mlp {
    /// He-initialized weights from `rng`, zero biases.
    pub fn new(inputs: usize, hidden: usize, classes: usize, rng: &mut Rng) -> Self {
        let mut params = vec![0.0; hidden * inputs + hidden + classes * hidden + classes];
        let s1 = (2.0 / inputs.max(1) as f64).sqrt();
        let s2 = (2.0 / hidden.max(1) as f64).sqrt();
        for p in &mut params[..hidden * inputs] {
            *p = s1 * rng.normal();
        }
        let o = hidden * inputs + hidden;
        for p in &mut params[o..o + classes * hidden] {
            *p = s2 * rng.normal();
        }
        Self {
            inputs,
            hidden,
            classes,
            params,
        }
    }

    pub fn hidden(&self) -> usize {
        self.hidden
    }

    fn offsets(&self) -> (usize, usize, usize) {
        let b1 = self.hidden * self.inputs;
        let w2 = b1 + self.hidden;
        let b2 = w2 + self.classes * self.hidden;
        (b1, w2, b2)
    }

    /// Hidden pre-activations and the logits.
    fn forward(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (b1, w2, b2) = self.offsets();
        let pre: Vec<f64> = (0..self.hidden)
            .map(|h| {
                let row = &self.params[h * self.inputs..(h + 1) * self.inputs];
                row.iter().zip(x).map(|(a, b)| a * b).sum::<f64>() + self.params[b1 + h]
            })
            .collect();
        let logits = (0..self.classes)
            .map(|k| {
                let row = &self.params[w2 + k * self.hidden..w2 + (k + 1) * self.hidden];
                row.iter()
                    .zip(&pre)
                    .map(|(a, z)| a * z.max(0.0))
                    .sum::<f64>()
                    + self.params[b2 + k]
            })
            .collect();
        (pre, logits)
    }

    /// `∂L/∂hidden pre-activation` from `∂L/∂logits`.
    fn back_hidden(&self, pre: &[f64], dz: &[f64]) -> Vec<f64> {
        let (_, w2, _) = self.offsets();
        (0..self.hidden)
            .map(|h| {
                if pre[h] <= 0.0 {
                    return 0.0;
                }
                (0..self.classes)
                    .map(|k| dz[k] * self.params[w2 + k * self.hidden + h])
                    .sum()
            })
            .collect()
    }

    fn gradient(&self, xs: &[Vec<f64>], ys: &[usize], idx: &[usize], l2: f64) -> Vec<f64> {
        let (b1, w2, b2) = self.offsets();
        let parts: Vec<Vec<f64>> = idx
            .par_chunks(CHUNK)
            .map(|chunk| {
                let mut g = vec![0.0; self.params.len()];
                for &i in chunk {
                    let x = &xs[i];
                    let (pre, logits) = self.forward(x);
                    let mut dz = softmax(&logits);
                    dz[ys[i]] -= 1.0;
                    for (k, d) in dz.iter().enumerate() {
                        for (h, z) in pre.iter().enumerate() {
                            g[w2 + k * self.hidden + h] += d * z.max(0.0);
                        }
                        g[b2 + k] += d;
                    }
                    let dh = self.back_hidden(&pre, &dz);
                    for (h, d) in dh.iter().enumerate() {
                        if *d == 0.0 {
                            continue;
                        }
                        let row = &mut g[h * self.inputs..(h + 1) * self.inputs];
                        for (gj, xj) in row.iter_mut().zip(x) {
                            *gj += d * xj;
                        }
                        g[b1 + h] += d;
                    }
                }
                g
            })
            .collect();
        let mut g = vec![0.0; self.params.len()];
        for part in parts {
            for (a, b) in g.iter_mut().zip(part) {
                *a += b;
            }
        }
        let n = idx.len().max(1) as f64;
        for (i, gi) in g.iter_mut().enumerate() {
            *gi /= n;
            let is_weight = i < b1 || (w2..b2).contains(&i);
            if is_weight {
                *gi += l2 * self.params[i];
            }
        }
        g
    }
}

impl Classifier for Mlp {
    fn inputs(&self) -> usize {
        self.inputs
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn logits(&self, x: &[f64]) -> Vec<f64> {
        self.forward(x).1
    }

    fn backprop_input(&self, x: &[f64], dlogits: &[f64]) -> Vec<f64> {
        let (pre, _) = self.forward(x);
        let dh = self.back_hidden(&pre, dlogits);
        let mut g = vec![0.0; self.inputs];
        for (h, d) in dh.iter().enumerate() {
            if *d == 0.0 {
                continue;
            }
            let row = &self.params[h * self.inputs..(h + 1) * self.inputs];
            for (gj, wj) in g.iter_mut().zip(row) {
                *gj += d * wj;
            }
        }
        g
    }

    fn fit(
        &mut self,
        xs: &[Vec<f64>],
        ys: &[usize],
        cfg: &TrainConfig,
        rng: &mut Rng,
    ) -> Result<(), AuditError> {
        check_data(xs, ys, self.inputs, self.classes)?;
        let mut adam = Adam::new(self.params.len());
        for_batches(xs.len(), cfg, rng, |idx| {
            let g = self.gradient(xs, ys, idx, cfg.l2);
            adam.step(&mut self.params, &g, cfg.learning_rate);
        });
        Ok(())
    }
}

/// Normal equations `AᵀA·w = Aᵀb` accumulated row by row, so fits of
/// growing prefixes of an equation list cost one pass in all.
#[derive(Clone, Debug, PartialEq)]
pub struct NormalEquations {
    d: usize,
    /// `AᵀA`, upper triangle (row-major `d×d`).
    gram: Vec<f64>,
    /// `Aᵀb`.
    rhs: Vec<f64>,
    /// `bᵀb`.
    bb: f64,
    rows: usize,
}

impl NormalEquations {
    pub fn new(unknowns: usize) -> Self {
        Self {
            d: unknowns,
            gram: vec![0.0; unknowns * unknowns],
            rhs: vec![0.0; unknowns],
            bb: 0.0,
            rows: 0,
        }
    }

    /// Equations added so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Adds the equation `x·w = y`.
    pub fn add(&mut self, x: &[f64], y: f64) -> Result<(), AuditError> {
        self.add_weighted(x, y, 1.0)
    }

    /// Adds the equation `x·w = y` with weight `weight` (`-1` takes back an
    /// equation added before).
    pub fn add_weighted(&mut self, x: &[f64], y: f64, weight: f64) -> Result<(), AuditError> {
        if x.len() != self.d {
            return Err(AuditError::Invalid(format!(
                "an equation has {} unknowns, the system {}",
                x.len(),
                self.d
            )));
        }
        if !y.is_finite() || !weight.is_finite() || x.iter().any(|v| !v.is_finite()) {
            return Err(AuditError::Invalid("non-finite equation".into()));
        }
        let d = self.d;
        for p in 0..d {
            let xp = weight * x[p];
            if xp == 0.0 {
                continue;
            }
            self.rhs[p] += xp * y;
            let gp = &mut self.gram[p * d..(p + 1) * d];
            for q in p..d {
                gp[q] += xp * x[q];
            }
        }
        self.bb += weight * y * y;
        self.rows = if weight < 0.0 {
            self.rows.saturating_sub(1)
        } else {
            self.rows + 1
        };
        Ok(())
    }

    /// Adds another system's equations.
    pub fn merge(&mut self, other: &Self) -> Result<(), AuditError> {
        if other.d != self.d {
            return Err(AuditError::Invalid("systems differ in unknowns".into()));
        }
        for (a, b) in self.gram.iter_mut().zip(&other.gram) {
            *a += b;
        }
        for (a, b) in self.rhs.iter_mut().zip(&other.rhs) {
            *a += b;
        }
        self.bb += other.bb;
        self.rows += other.rows;
        Ok(())
    }

    /// `argmin_w ‖A·w − b‖² + λ‖w‖²` with `λ = ridge · (trace(AᵀA)/d)`, by
    /// a Cholesky factorization. The relative ridge keeps an
    /// under-determined or collinear system solvable without noticeably
    /// biasing a well-posed one (use `1e-10`-ish); if the factorization
    /// still fails, the ridge grows tenfold, up to eight times.
    pub fn solve(&self, ridge: f64) -> Result<Vec<f64>, AuditError> {
        let d = self.d;
        if d == 0 {
            return Err(AuditError::Invalid("no unknowns".into()));
        }
        let mut full = self.gram.clone();
        for p in 0..d {
            for q in 0..p {
                full[p * d + q] = full[q * d + p];
            }
        }
        let trace: f64 = (0..d).map(|p| full[p * d + p]).sum();
        let base = (trace / d as f64).max(1e-300);
        let mut lambda = ridge.max(0.0) * base;
        if lambda == 0.0 {
            lambda = 1e-14 * base;
        }
        for _ in 0..8 {
            let mut m = full.clone();
            for p in 0..d {
                m[p * d + p] += lambda;
            }
            let m = nalgebra::DMatrix::from_row_slice(d, d, &m);
            if let Some(chol) = nalgebra::linalg::Cholesky::new(m) {
                let x = chol.solve(&nalgebra::DVector::from_column_slice(&self.rhs));
                if x.iter().all(|v| v.is_finite()) {
                    return Ok(x.iter().copied().collect());
                }
            }
            lambda *= 10.0;
        }
        Err(AuditError::Invalid(
            "least squares: the normal equations are not positive definite".into(),
        ))
    }

    /// `‖A·w − b‖²` from the accumulated sums (no second pass).
    pub fn residual_sum_of_squares(&self, w: &[f64]) -> f64 {
        let d = self.d;
        let mut wgw = 0.0;
        for p in 0..d {
            wgw += self.gram[p * d + p] * w[p] * w[p];
            for q in p + 1..d {
                wgw += 2.0 * self.gram[p * d + q] * w[p] * w[q];
            }
        }
        let wb: f64 = w.iter().zip(&self.rhs).map(|(a, b)| a * b).sum();
        (self.bb - 2.0 * wb + wgw).max(0.0)
    }
}

/// Ridge-stabilized least squares over the rows of `a` (see
/// [`NormalEquations::solve`]); the normal equations are summed in fixed
/// parallel chunks.
pub fn least_squares(a: &[&[f64]], b: &[f64], ridge: f64) -> Result<Vec<f64>, AuditError> {
    if a.len() != b.len() {
        return Err(AuditError::Invalid(format!(
            "{} equations but {} right-hand sides",
            a.len(),
            b.len()
        )));
    }
    let Some(first) = a.first() else {
        return Err(AuditError::Invalid("no equations".into()));
    };
    let d = first.len();
    let idx: Vec<usize> = (0..a.len()).collect();
    let parts: Vec<NormalEquations> = idx
        .par_chunks(512)
        .map(|chunk| {
            let mut ne = NormalEquations::new(d);
            for &i in chunk {
                ne.add(a[i], b[i])?;
            }
            Ok(ne)
        })
        .collect::<Result<_, AuditError>>()?;
    let mut ne = NormalEquations::new(d);
    for p in &parts {
        ne.merge(p)?;
    }
    ne.solve(ridge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_recovers_an_affine_map() {
        let mut rng = Rng::new(1);
        let w = [0.5, -2.0, 3.0, 1.25];
        let rows: Vec<Vec<f64>> = (0..50)
            .map(|_| vec![rng.uniform(), rng.uniform(), rng.uniform(), 1.0])
            .collect();
        let b: Vec<f64> = rows
            .iter()
            .map(|r| r.iter().zip(&w).map(|(a, b)| a * b).sum())
            .collect();
        let refs: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
        let got = least_squares(&refs, &b, 1e-12).expect("solvable");
        for (g, e) in got.iter().zip(&w) {
            assert!((g - e).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn learners_fit_a_separable_problem() {
        let mut rng = Rng::new(2);
        let xs: Vec<Vec<f64>> = (0..400)
            .map(|_| vec![rng.uniform(), rng.uniform()])
            .collect();
        let ys: Vec<usize> = xs.iter().map(|x| usize::from(x[0] > x[1])).collect();
        let mut lr = SoftmaxRegression::new(2, 2);
        lr.fit(&xs, &ys, &TrainConfig::softmax(), &mut rng)
            .expect("fit");
        let mut mlp = Mlp::new(2, 16, 2, &mut rng);
        let cfg = TrainConfig {
            learning_rate: 0.02,
            ..TrainConfig::mlp()
        };
        mlp.fit(&xs, &ys, &cfg, &mut rng).expect("fit");
        for m in [&lr as &dyn Classifier, &mlp] {
            let acc = m
                .predict_all(&xs)
                .iter()
                .zip(&ys)
                .filter(|(a, b)| a == b)
                .count() as f64
                / ys.len() as f64;
            assert!(acc > 0.95, "accuracy {acc}");
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(3);
        let mlp = Mlp::new(3, 5, 4, &mut rng);
        let x = [0.3, 0.7, 0.2];
        let g = mlp.loss_gradient(&x, 2);
        let loss = |x: &[f64]| -mlp.probabilities(x)[2].ln();
        for i in 0..3 {
            let mut a = x;
            let mut b = x;
            a[i] += 1e-6;
            b[i] -= 1e-6;
            let fd = (loss(&a) - loss(&b)) / 2e-6;
            assert!((fd - g[i]).abs() < 1e-5, "{fd} vs {}", g[i]);
        }
    }
}
