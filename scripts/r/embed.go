// Package rscript carries the R scripts in the binary, so that a built
// headroom runs them without a checkout.
package rscript

import _ "embed"

// Forecast is forecast.R: R's forecast package (ses, ets, thetaf,
// auto.arima) on the series and origins the backtest scores.
//
//go:embed forecast.R
var Forecast []byte
