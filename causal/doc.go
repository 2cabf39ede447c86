// Package causal holds the statistical core of CausalRM (docs/method.md): the per-row losses of every estimator with their
// analytic gradients, the anchor-point flip-rate estimator, early stopping and
// the evaluation metrics.
//
// Everything here is pure float64 arithmetic on scalars and slices, with no
// dependency on the model or data layers, so that the formulas can be checked
// line by line against the specification and tested in isolation.
package causal
