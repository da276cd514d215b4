# forecast.R: R's forecast package as a peer of headroom's backtest.
#
#   Rscript scripts/r/forecast.R IN OUT CONFIDENCE
#
# IN has one series a line: "id<TAB>h<TAB>window<TAB>origins<TAB>values", origins and
# values comma-separated. An origin o (0-based) means: fit on the samples before index o
# (at most the last `window` of them) and forecast steps 1..h, i.e. indices o..o+h-1.
# OUT gets one line per series, origin and model: "id,origin,model,f1..fh,u1..uh", the
# point forecasts and the upper bounds at CONFIDENCE (the upper end of the package's
# central interval at level 2*CONFIDENCE-1).
# Models: ses, ets, thetaf, auto.arima with the package's automatic defaults, on a
# non-seasonal ts (ets cannot fit a 288- or 2016-sample season). A fit that fails
# falls back to the last value and is counted on stderr.
suppressPackageStartupMessages(library(forecast))
args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 3) stop("usage: forecast.R IN OUT CONFIDENCE")
level <- 100 * (2 * as.numeric(args[3]) - 1)
lines <- readLines(args[1])

pu <- function(f) c(as.numeric(f$mean), as.numeric(f$upper[, 1]))
models <- list(
  ses   = function(y, h) pu(ses(y, h = h, level = level)),
  ets   = function(y, h) pu(forecast(ets(y), h = h, level = level)),
  theta = function(y, h) pu(thetaf(y, h = h, level = level)),
  arima = function(y, h) pu(forecast(auto.arima(y), h = h, level = level))
)

one <- function(line) {
  f <- strsplit(line, "\t", fixed = TRUE)[[1]]
  id <- f[1]
  h <- as.integer(f[2])
  win <- as.integer(f[3])
  origins <- as.integer(strsplit(f[4], ",", fixed = TRUE)[[1]])
  x <- as.numeric(strsplit(f[5], ",", fixed = TRUE)[[1]])
  out <- character(0)
  fails <- 0L
  for (o in origins) {
    y <- ts(x[max(1, o - win + 1):o])
    for (m in names(models)) {
      p <- tryCatch(as.numeric(models[[m]](y, h)), error = function(e) NULL)
      if (is.null(p) || length(p) != 2 * h || any(!is.finite(p))) {
        p <- rep(y[length(y)], 2 * h)
        fails <- fails + 1L
      }
      out <- c(out, paste(id, o, m, paste(format(p, digits = 9, scientific = FALSE, trim = TRUE), collapse = ","), sep = ","))
    }
  }
  list(out = out, fails = fails)
}

# The caller runs one process per core on a share of the series.
con <- file(args[2], "w")
fails <- 0L
for (line in lines) {
  r <- one(line)
  writeLines(r$out, con)
  fails <- fails + r$fails
}
close(con)
if (fails > 0) message("forecast.R: ", fails, " fits failed and fell back to the last value")
