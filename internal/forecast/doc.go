// Package forecast predicts each VM's demand per resource over a short horizon,
// with upper bounds whose stated confidence holds in measurement.
//
// The pieces:
//
//   - History: a float32 ring buffer per VM and resource (4 bytes a sample),
//     a week long by default so that the weekly cycle can be used.
//   - Model: a small incremental forecaster (last value, mean, medians, EWMA,
//     damped Holt, seasonal naive, Holt-Winters, least-squares AR), registered
//     by name in a table like PromQL's functions; see Names and Lookup. Models
//     update in O(1) or O(window) per sample and never re-fit from the history.
//   - The "default" model, the online model choice: per VM and resource, a
//     blend of the cheap models (last value, medians over 6, 24, ~96 and ~192
//     samples, mean of 12, damped Holt, and yesterday's and last week's value
//     once that much history exists), each weighted by its recent absolute
//     error at the horizon step (in groups 1, 2-3, 4-7, ...). A new VM starts
//     with equal weights, the sensible default until errors exist.
//   - Series: history + model + calibration. The upper bound is the point
//     forecast plus a per-step quantile of the model's own past errors,
//     normalised by their recent scale and tracked online per VM and step (the
//     quantile tracker of conformal PID control, Angelopoulos et al. 2023,
//     which generalises the adaptive conformal inference of Gibbs & Candès
//     2021). It assumes no error distribution, and its long-run coverage
//     converges to the stated level for any sequence of errors. A new series
//     starts from a Laplace prior. ProbExceed reads P(demand > x at some step
//     within H) off tracked quantiles of the horizon maximum, calibrated the
//     same way.
//   - Engine: Series for every VM and resource, safe for concurrent use.
//
// Concurrency contract: every Engine and VM method may be called from any
// goroutine. Each VM has its own mutex, so observations of different VMs run in
// parallel and a reader of one VM never waits for writers of another. Forecasts
// are computed and cached at Observe time, so Forecast and ProbExceed cost a
// copy, not a model evaluation. A Series or Model on its own is not safe for
// concurrent use.
package forecast
